// The floor the rank bench holds /v1/rank against: the process layout of `serve --workers N` (a primary and N
// Fastify workers sharing the port) doing only what no ranking can skip: take the request, parse its JSON body,
// answer a reply listing its candidates. Its latency at the bench's rate is what this machine and the load
// generator beside it allow before any feature read, assembly or model run. /metrics: every worker's CPU (prom-client
// defaults, gathered as serve gathers them) and answers. Usage: stub-server.ts PORT WORKERS
import Fastify from 'fastify';
import pino from 'pino';
import { Counter, collectDefaultMetrics, Registry } from 'prom-client';
import { clusterMetrics, isWorker, runPrimary } from '../src/scoring/workers.ts';

const [port, workers] = process.argv.slice(2).map(Number) as [number, number];
if (workers > 1 && !isWorker()) await runPrimary(workers, pino({ level: 'warn' }));
else {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const answered = new Counter({ name: 'stub_answered_total', help: 'Requests answered', registers: [registry] });
  const metrics = isWorker() ? clusterMetrics(registry) : () => registry.metrics();
  const app = Fastify({ bodyLimit: 1 << 20 });
  app.post('/v1/rank', async (req) => {
    const body = req.body as { request_id: string; time: number; candidates: { ad_id: string; bid?: number }[] };
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
        pctr: 0,
        bid: c.bid ?? null,
        ecpm: null,
        unknown: [],
      })),
    };
  });
  app.get('/metrics', async (_req, reply) => reply.type('text/plain').send(await metrics()));
  app.get('/readyz', async () => ({ status: 'ready' }));
  await app.listen({ port, host: '127.0.0.1' });
}
