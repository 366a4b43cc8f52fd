// The HTTP face of scoring (Fastify). Routes are declared with TypeBox schemas: one source for validation, the
// handler's types and the OpenAPI document (/openapi.json). A client's mistake is always a 4xx with a JSON reason.
import { timingSafeEqual } from 'node:crypto';
import swagger from '@fastify/swagger';
import { type Static, Type, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyError } from 'fastify';
import type { Logger } from 'pino';
import type { AdRequest } from '../events/types.ts';
import { MIN_EVENT_TIME, validateEvent } from '../events/validate.ts';
import type { ScoringMetrics } from './metrics.ts';
import { NoModelError, type Ranker, type RankerDeps } from './ranker.ts';

export interface ServerOptions {
  /** Most candidates in one request (more: 400). */
  maxCandidates: number;
  /** Largest request body in bytes (more: 413). */
  bodyLimit: number;
  /** When set, POST /v1/rank needs `Authorization: Bearer <token>`. */
  token?: string;
}

export interface ServerDeps {
  ranker: Ranker;
  models: RankerDeps['models'];
  /** Why the online store cannot answer now (e.g. "valkey reconnecting"), or null when it can. */
  storeProblem(): string | null;
  metrics: ScoringMetrics;
  /** The /metrics text, when it is not this process's registry alone (serve --workers: every worker's). */
  metricsText?: () => Promise<string>;
  log: Logger;
}

const Id = Type.String({ minLength: 1, maxLength: 256 });
const Bid = Type.Union([Type.Number({ minimum: 0 }), Type.Null()], {
  description: 'The candidate’s bid; when every candidate has one, ranking is by eCPM = pCTR × bid × 1000',
});

const CandidateIn = Type.Object(
  { ad_id: Id, campaign_id: Id, advertiser_id: Id, category: Id, bid: Type.Optional(Bid) },
  { additionalProperties: false },
);

export function rankBodySchema(maxCandidates: number) {
  return Type.Object(
    {
      request_id: Id,
      user_id: Id,
      publisher_id: Id,
      category: Type.Optional(Type.Union([Id, Type.Null()], { description: 'The page’s category or query' })),
      device: Id,
      os: Id,
      time: Type.Optional(
        Type.Integer({
          minimum: MIN_EVENT_TIME,
          description: 'The moment to rank at, epoch ms (default: now); features are read as of then',
        }),
      ),
      candidates: Type.Array(CandidateIn, { minItems: 1, maxItems: maxCandidates }),
    },
    { additionalProperties: false },
  );
}
type RankBody = Static<ReturnType<typeof rankBodySchema>>;

const RankedOut = Type.Object({
  ad_id: Type.String(),
  rank: Type.Integer({ description: '1 = best' }),
  pctr: Type.Number({ description: 'Predicted click probability' }),
  bid: Bid,
  ecpm: Type.Union([Type.Number(), Type.Null()], {
    description: 'Expected cost per mille, pCTR × bid × 1000, when a bid is given',
  }),
  unknown: Type.Array(Type.String(), {
    description: 'Entities with no stored data (ad, user, ...): their features are the definitions’ defaults',
  }),
});
const RankReply = Type.Object({
  request_id: Type.String(),
  model_version: Type.String(),
  event_time: Type.Integer(),
  scored_time: Type.Integer(),
  features_defaulted: Type.Boolean({
    description: 'The online store did not answer within the budget: every feature is its default',
  }),
  ranked: Type.Array(RankedOut),
});
const Problem = Type.Object({ error: Type.String(), reason: Type.String() });
const Health = Type.Object({ status: Type.String(), problems: Type.Optional(Type.Array(Type.String())) });

function tokenMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(header?.startsWith('Bearer ') ? header.slice(7) : '');
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}

export async function buildServer(deps: ServerDeps, options: ServerOptions) {
  const app = Fastify({
    // Per-request logs (info) cost more than a ranking's share of time; warnings and errors still go through.
    loggerInstance: deps.log.child({}, { level: deps.log.levelVal > 40 ? deps.log.level : 'warn' }),
    bodyLimit: options.bodyLimit,
    // Reject what the schema does not name instead of silently dropping it, and never coerce types.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  await app.register(swagger, {
    openapi: {
      info: { title: 'Tributary scoring', version: '1', description: 'Ranks candidate ads by predicted CTR' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  });

  app.setErrorHandler((err: FastifyError, _req, reply) => {
    if (err instanceof NoModelError) return reply.code(503).send({ error: 'not ready', reason: err.message });
    const status = err.validation ? 400 : (err.statusCode ?? 500);
    if (status >= 500) {
      deps.log.error({ err }, 'ranking failed');
      return reply.code(500).send({ error: 'internal error', reason: 'see the server log' });
    }
    deps.metrics.rejected.inc({ reason: err.validation ? 'validation' : (err.code ?? String(status)) });
    return reply
      .code(status)
      .send({ error: err.validation ? 'invalid request' : (err.code ?? 'bad request'), reason: err.message });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: 'not found', reason: `no route ${req.method} ${req.url}` }),
  );

  app.post(
    '/v1/rank',
    {
      schema: {
        description: 'Ranks the candidate ads for one user and page',
        body: rankBodySchema(options.maxCandidates),
        response: { 200: RankReply, '4xx': Problem, 503: Problem },
        ...(options.token ? { security: [{ bearer: [] }] } : {}),
      },
      onRequest: options.token
        ? async (req, reply) => {
            if (!tokenMatches(req.headers.authorization, options.token as string)) {
              deps.metrics.rejected.inc({ reason: 'unauthorized' });
              return reply.code(401).send({ error: 'unauthorized', reason: 'missing or wrong bearer token' });
            }
          }
        : undefined,
    },
    async (req, reply) => {
      const request = adRequestOf(req.body);
      // The same semantic checks a request event gets on Kafka (e.g. a time more than a day ahead).
      const invalid = validateEvent('request', request, Date.now());
      if (invalid) {
        deps.metrics.rejected.inc({ reason: 'validation' });
        return reply.code(400).send({ error: 'invalid request', reason: invalid });
      }
      return deps.ranker.rank(request);
    },
  );

  app.get('/healthz', { schema: { response: { 200: Health } } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { response: { 200: Health, 503: Health } } }, async (_req, reply) => {
    const problems: string[] = [];
    if (!deps.models.model)
      problems.push(`no model in service${deps.models.refusal ? `: ${deps.models.refusal.reason}` : ''}`);
    const store = deps.storeProblem();
    if (store) problems.push(store);
    return problems.length ? reply.code(503).send({ status: 'not ready', problems }) : { status: 'ready' };
  });
  const metricsText = deps.metricsText ?? (() => deps.metrics.registry.metrics());
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) =>
    reply.type(deps.metrics.registry.contentType).send(await metricsText()),
  );
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}

function adRequestOf(body: RankBody): AdRequest {
  return {
    request_id: body.request_id,
    event_time: body.time ?? Date.now(),
    user_id: body.user_id,
    publisher_id: body.publisher_id,
    category: body.category ?? null,
    device: body.device,
    os: body.os,
    candidates: body.candidates.map((c) => ({
      ad_id: c.ad_id,
      campaign_id: c.campaign_id,
      advertiser_id: c.advertiser_id,
      category: c.category,
      bid: c.bid ?? null,
    })),
  };
}
