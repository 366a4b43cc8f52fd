// `tributary console`'s HTTP side (Fastify): the pages (static HTML and small ES modules, no build step; charts by
// uPlot, served from its package) and a JSON API whose routes declare TypeBox schemas, so a bad parameter is a 400
// with the reason. Read-only unless the request carries the scoring token (promote, roll back).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ClickHouseClient } from '@clickhouse/client';
import fastifyStatic from '@fastify/static';
import { Type, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyError, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { FeatureSet } from '../features/compile.ts';
import { tileOf } from '../features/window.ts';
import { type ModelRegistry, ModelRegistryError } from '../model/registry.ts';
import type { FeatureReader } from '../online/contract.ts';
import { tokenMatches } from '../scoring/server.ts';
import type { DeadLetterSummary, DeadLetterView } from '../streams/dead-letter-reader.ts';
import { BadRequest, catalog, featureHistory, parseEntityKey, readGroup } from './features.ts';
import { buckets, byLabel } from './metrics-source.ts';
import { listModels, modelWeights } from './models.ts';
import { readParity } from './parity.ts';
import type { Sampler } from './sampler.ts';

/** Dead letters by reason class with a few examples (the dead-letter topic's, or the stream metrics' counts). */
export type DeadLetterReason = Pick<DeadLetterSummary, 'reasonClass' | 'count' | 'replayed'> & {
  examples: Pick<DeadLetterView, 'partition' | 'offset' | 'time' | 'reason' | 'source' | 'bytes' | 'replayed'>[];
};

export interface ConsoleDeps {
  features: FeatureSet;
  sampler: Sampler;
  registry: ModelRegistry;
  /** The offline store (feature history, parity); unset with `offlineProblem` saying why. */
  offline?: ClickHouseClient;
  offlineProblem?: string;
  /** The online store (current values); unset with `onlineProblem` saying why. */
  online?: FeatureReader;
  onlineProblem?: string;
  /** Dead letters by reason with examples, read from the log; unset: the stream metrics' counts. */
  deadLetters?: () => Promise<DeadLetterReason[]>;
  /** What the header says the console reads (no secrets). */
  about: { mode: string; namespace: string; sources: string[] };
  log: Logger;
}

export interface ConsoleOptions {
  /** When set, POSTs need `Authorization: Bearer <token>`; unset, the console is read-only. */
  token?: string;
}

const PAGES = ['pipeline', 'features', 'parity', 'models', 'serving'] as const;
const here = dirname(fileURLToPath(import.meta.url));
const uplotDir = dirname(createRequire(import.meta.url).resolve('uplot'));

/** Text fields: no unpaired surrogates (they would not round-trip to the stores). */
const Text = (maxLength: number) => Type.String({ minLength: 1, maxLength, pattern: '^[^\\uD800-\\uDFFF]*$' });
const Time = Type.String({
  maxLength: 40,
  description: 'ISO time (2026-11-02T12:00:00Z) or epoch milliseconds',
});
const Version = Type.String({ pattern: '^[0-9a-f]{12}$', description: 'a model version: 12 hex characters' });

function parseTime(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const t = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isFinite(t) || t < 0 || t > Date.UTC(2100, 0, 1))
    throw new BadRequest(`${name} "${text}" is not a time (ISO 8601 or epoch milliseconds, before 2100)`);
  return t;
}

export async function buildConsole(deps: ConsoleDeps, options: ConsoleOptions = {}) {
  const app = Fastify({
    loggerInstance: deps.log.child({}, { level: deps.log.levelVal > 40 ? deps.log.level : 'warn' }),
    bodyLimit: 4096,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.setErrorHandler((err: FastifyError, _req, reply) => {
    if (err instanceof BadRequest) return reply.code(400).send({ error: 'bad request', reason: err.message });
    if (err instanceof ModelRegistryError) {
      const missing = err.message.startsWith('no model');
      return reply.code(missing ? 404 : 409).send({ error: missing ? 'not found' : 'conflict', reason: err.message });
    }
    const status = err.validation ? 400 : (err.statusCode ?? 500);
    if (status >= 500) {
      deps.log.error({ err }, 'console request failed');
      return reply.code(500).send({ error: 'internal error', reason: err.message });
    }
    return reply.code(status).send({ error: err.validation ? 'invalid request' : 'bad request', reason: err.message });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: 'not found', reason: `no route ${req.method} ${req.url.split('?', 1)[0]}` }),
  );

  await app.register(fastifyStatic, { root: join(here, 'pages'), prefix: '/static/' });
  await app.register(fastifyStatic, { root: uplotDir, prefix: '/vendor/uplot/', decorateReply: false });
  app.get('/', { schema: { hide: true } }, async (_req, reply) => reply.redirect('/pipeline'));
  for (const page of PAGES)
    app.get(`/${page}`, { schema: { hide: true } }, async (_req, reply) => reply.sendFile('shell.html'));

  // Writes (promote, roll back) need the scoring token; without one configured the console is read-only.
  const authorize = async (req: FastifyRequest, reply: FastifyReply) => {
    if (!options.token)
      return reply.code(403).send({
        error: 'read-only',
        reason: 'the console was started without a scoring token (--token / TRIBUTARY_SCORING_TOKEN): it is read-only',
      });
    if (!tokenMatches(req.headers.authorization, options.token))
      return reply.code(401).send({ error: 'unauthorized', reason: 'missing or wrong bearer token' });
  };

  app.get('/api/overview', async () => {
    const latest = deps.sampler.latest;
    return {
      ...deps.about,
      definitionsVersion: deps.features.version,
      writable: Boolean(options.token),
      intervalMs: deps.sampler.options.intervalMs,
      sampledAt: latest?.at ?? null,
      problems: latest?.metrics.problems ?? [],
    };
  });

  const minTileMs = Math.min(...deps.features.groups.map((g) => g.minTileMs));
  app.get('/api/pipeline', async () => {
    const points = deps.sampler.points;
    const latest = points.at(-1);
    const now = latest?.at ?? Date.now();
    // A read at `now` sees complete tiles only: data up to the start of now's smallest tile at most.
    const readHorizon = tileOf(now, minTileMs) * minTileMs;
    const partitions = (latest?.partitions ?? []).map((p) => ({
      ...p,
      freshnessSeconds: p.newestEventTime === undefined ? null : (now - p.newestEventTime) / 1000,
      readAgeSeconds: p.newestEventTime === undefined ? null : (now - Math.min(p.newestEventTime, readHorizon)) / 1000,
    }));
    const series: Record<string, { lag: (number | null)[]; rate: (number | null)[] }> = {};
    const at: number[] = [];
    points.forEach((pt, i) => {
      at.push(pt.at);
      for (const p of pt.partitions ?? []) {
        const id = `${p.topic}/${p.partition}`;
        series[id] ??= { lag: new Array(i).fill(null), rate: new Array(i).fill(null) };
        series[id].lag[i] = p.lag;
        series[id].rate[i] = p.eventsPerSecond;
      }
      for (const s of Object.values(series)) {
        s.lag[i] ??= null;
        s.rate[i] ??= null;
      }
    });
    let deadLetters: { from: string; reasons: DeadLetterReason[]; problem?: string };
    if (deps.deadLetters) {
      try {
        deadLetters = { from: 'the dead-letter topic', reasons: await deps.deadLetters() };
      } catch (err) {
        deadLetters = { from: 'the dead-letter topic', reasons: [], problem: (err as Error).message };
      }
    } else {
      const counts = byLabel(latest?.metrics.samples ?? [], 'tributary_stream_dead_letters_total', 'reason');
      deadLetters = {
        from: 'the stream’s metrics (counts since it started; examples need the dead-letter reader)',
        reasons: Object.entries(counts)
          .filter(([, n]) => n > 0)
          .map(([reasonClass, count]) => ({ reasonClass, count, replayed: 0, examples: [] })),
      };
    }
    const verdicts = byLabel(latest?.metrics.samples ?? [], 'tributary_stream_events_total', 'verdict');
    return {
      sampledAt: latest?.at ?? null,
      intervalMs: deps.sampler.options.intervalMs,
      minTileSeconds: minTileMs / 1000,
      problem: latest?.progressProblem ?? null,
      partitions,
      series: { at, partitions: series },
      verdicts,
      deadLetters,
    };
  });

  app.get('/api/features', async () => catalog(deps.features));

  app.get(
    '/api/features/history',
    {
      schema: {
        querystring: Type.Object(
          {
            entity: Text(64),
            key: Text(600),
            from: Type.Optional(Time),
            to: Type.Optional(Time),
            at: Type.Optional(Time),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (req) => {
      const q = req.query;
      const { group, context } = parseEntityKey(deps.features, q.entity, q.key);
      const range = { from: parseTime('from', q.from), to: parseTime('to', q.to) };
      const asked = parseTime('at', q.at);
      if (!deps.offline) throw new BadRequest(deps.offlineProblem ?? 'no offline store');
      // "Now" of the data: the newest event the stream applied (a replayed history may be weeks old), else the clock.
      const newest = Math.max(...(deps.sampler.latest?.partitions ?? []).map((p) => p.newestEventTime ?? 0), 0);
      const at = asked ?? (newest || Date.now());
      const history = await featureHistory(deps.offline, deps.features, q.entity, q.key, range, at);
      let online: number[] | null = null;
      let onlineProblem: string | null = deps.onlineProblem ?? null;
      if (deps.online)
        try {
          online = await readGroup(deps.features, deps.online, group, context, at);
        } catch (err) {
          onlineProblem = `the online store did not answer: ${(err as Error).message}`;
        }
      return { ...history, at, online, onlineProblem };
    },
  );

  app.get('/api/parity', async () => {
    if (!deps.offline) return { last: null, live: null, runHint: deps.offlineProblem, liveHint: deps.offlineProblem };
    return readParity(deps.offline);
  });

  app.get('/api/models', async () => {
    const samples = deps.sampler.latest?.metrics.samples ?? [];
    return {
      dir: 'the model registry',
      current: await deps.registry.current(),
      writable: Boolean(options.token),
      models: await listModels(deps.registry, samples),
    };
  });
  app.get('/api/models/:version/weights', { schema: { params: Type.Object({ version: Version }) } }, async (req) =>
    modelWeights(deps.registry, req.params.version),
  );
  app.post(
    '/api/models/:version/promote',
    {
      schema: { params: Type.Object({ version: Version }) },
      onRequest: authorize,
    },
    async (req) => {
      const previous = await deps.registry.current();
      await deps.registry.promote(req.params.version);
      deps.log.warn({ version: req.params.version, previous }, 'model promoted from the console');
      return { current: req.params.version, previous };
    },
  );
  app.post('/api/models/rollback', { onRequest: authorize }, async () => {
    const previous = await deps.registry.current();
    const current = await deps.registry.rollback();
    deps.log.warn({ version: current, previous }, 'model rolled back from the console');
    return { current, previous };
  });

  app.get('/api/serving', async () => {
    const points = deps.sampler.points;
    const samples = points.at(-1)?.metrics.samples ?? [];
    const cumulative = buckets(samples, 'tributary_rank_request_seconds');
    let below = 0;
    const histogram = cumulative.map(([le, n]) => {
      const count = n - below;
      below = n;
      return { le: Number.isFinite(le) ? le : null, count };
    });
    const versions = byLabel(samples, 'tributary_model_info', 'version');
    return {
      intervalMs: deps.sampler.options.intervalMs,
      points: points.map((p) => p.serving),
      histogram,
      byCode: byLabel(samples, 'tributary_rank_request_seconds_count', 'code'),
      rankings: byLabel(samples, 'tributary_rankings_total', 'features'),
      modelVersions: Object.entries(versions)
        .filter(([, v]) => v > 0)
        .map(([v]) => v),
      problems: points.at(-1)?.metrics.problems ?? [],
    };
  });

  return app;
}
