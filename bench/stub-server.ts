// The floors the rank bench holds /v1/rank against: the process layout of `serve --workers N` (a primary and N
// Fastify workers sharing the port) doing only what no ranking can skip. Plain: take the request, parse its JSON
// body, answer a reply listing its candidates; its latency at the bench's rate is what this machine and the load
// generator beside it allow before any feature read, assembly or model run. With `--io VALKEY NAMESPACE MODELS` it
// also does the I/O of a ranking with no feature work: one Valkey read of the parts of the request's own entities
// (the user's and each candidate category's user × category, which no read cache keeps) through the store's read
// script, one run of the registry's current model on a zero [candidates × features] batch, and a reply carrying its
// scores. /metrics: every worker's CPU (prom-client defaults, gathered as serve gathers them) and answers.
// Usage: stub-server.ts PORT WORKERS [--io VALKEY NAMESPACE MODELS]
import Fastify from 'fastify';
import { Valkey } from 'iovalkey';
import * as ort from 'onnxruntime-node';
import pino from 'pino';
import { Counter, collectDefaultMetrics, Registry } from 'prom-client';
import { FeatureSet } from '../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../src/features/definitions.ts';
import { entities, entityKey } from '../src/features/entities.ts';
import { ModelRegistry } from '../src/model/registry.ts';
import { ValkeyStore } from '../src/online/valkey-store.ts';
import { clusterMetrics, isWorker, runPrimary } from '../src/scoring/workers.ts';

const [portArg, workersArg, flag, valkeyUrl, namespace, modelsDir] = process.argv.slice(2);
const [port, workers] = [Number(portArg), Number(workersArg)];
const io = flag === '--io';

type Body = {
  request_id: string;
  user_id: string;
  time: number;
  candidates: { ad_id: string; category: string; bid?: number }[];
};

/** The floor's I/O: a store read of the request's user entities and a model run (see the file's head). */
async function ioOf() {
  const features = new FeatureSet(DEFAULT_GROUPS);
  const client = new Valkey(valkeyUrl as string, { enableAutoPipelining: true });
  const store = new ValkeyStore(client, { features, namespace, ttlSeconds: 0, retentionMs: 0 });
  const registry = new ModelRegistry(modelsDir as string);
  const version = await registry.current();
  if (version === null) throw new Error(`no current model in ${modelsDir}`);
  const session = await ort.InferenceSession.create(await registry.read(version), {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
  });
  const width = features.names.length;
  return async (body: Body): Promise<Float32Array> => {
    const user = { user_id: body.user_id } as Parameters<typeof entityKey>[1];
    const keys = new Set([entityKey(entities.user, user)]);
    for (const c of body.candidates) keys.add(entityKey(entities.userCategory, { ...user, category: c.category }));
    await store.readParts([...keys]);
    const n = body.candidates.length;
    const out = await session.run({ features: new ort.Tensor('float32', new Float32Array(n * width), [n, width]) });
    return (out.pctr as ort.Tensor).data as Float32Array;
  };
}

if (workers > 1 && !isWorker()) await runPrimary(workers, pino({ level: 'warn' }));
else {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const answered = new Counter({ name: 'stub_answered_total', help: 'Requests answered', registers: [registry] });
  const metrics = isWorker() ? clusterMetrics(registry) : () => registry.metrics();
  const score = io ? await ioOf() : undefined;
  const app = Fastify({ bodyLimit: 1 << 20 });
  app.post('/v1/rank', async (req) => {
    const body = req.body as Body;
    const pctr = score ? await score(body) : undefined;
    answered.inc();
    return {
      request_id: body.request_id,
      model_version: 'stub',
      event_time: body.time,
      scored_time: Date.now(),
      features_defaulted: false,
      ranked: body.candidates.map((c, i) => ({
        ad_id: c.ad_id,
        rank: i + 1,
        pctr: pctr?.[i] ?? 0,
        bid: c.bid ?? null,
        ecpm: pctr && c.bid != null ? (pctr[i] as number) * c.bid * 1000 : null,
        unknown: [],
      })),
    };
  });
  app.get('/metrics', async (_req, reply) => reply.type('text/plain').send(await metrics()));
  app.get('/readyz', async () => ({ status: 'ready' }));
  await app.listen({ port, host: '127.0.0.1' });
}
