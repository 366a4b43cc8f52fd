// The HTTP face of scoring (Fastify). Routes are declared with TypeBox schemas: one source for validation, the
// handler's types and the OpenAPI document (/openapi.json). A client's mistake is always a 4xx with a JSON reason.
import { timingSafeEqual } from 'node:crypto';
import swagger from '@fastify/swagger';
import { type Static, Type, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyError, type FastifySchemaValidationError } from 'fastify';
import type { Logger } from 'pino';
import type { AdRequest } from '../events/types.ts';
import { MAX_BID, MIN_EVENT_TIME } from '../events/validate.ts';
import { KEY_SEPARATOR } from '../features/entities.ts';
import { parseJsonBody } from './json-body.ts';
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
/**
 * Ids that become entity keys: no key separator (user "u-1|x" × category "y" would be user "u-1" × "x|y"), and no
 * unpaired surrogate (UTF-8 stores each as U+FFFD, so two such ids would be one entity).
 */
export const KEY_ID_PATTERN = `^[^${KEY_SEPARATOR}\\uD800-\\uDFFF]*$`;
const KeyId = Type.String({
  minLength: 1,
  maxLength: 256,
  pattern: KEY_ID_PATTERN,
  description: `An entity id: no "${KEY_SEPARATOR}" (it joins the fields of composite entity keys) and no unpaired surrogate`,
});
const Bid = Type.Union([Type.Number({ minimum: 0, maximum: MAX_BID }), Type.Null()], {
  description: 'The candidate’s bid; when every candidate has one, ranking is by eCPM = pCTR × bid × 1000',
});
/** The latest `time` a ranking may be asked for: a fixed bound the document can state (a read moves no watermark). */
export const MAX_RANK_TIME = Date.UTC(2100, 0, 1);

const CandidateIn = Type.Object(
  { ad_id: KeyId, campaign_id: KeyId, advertiser_id: KeyId, category: KeyId, bid: Type.Optional(Bid) },
  { additionalProperties: false },
);

export function rankBodySchema(maxCandidates: number) {
  return Type.Object(
    {
      request_id: Id,
      user_id: KeyId,
      publisher_id: KeyId,
      category: Type.Optional(Type.Union([Id, Type.Null()], { description: 'The page’s category or query' })),
      device: Id,
      os: Id,
      time: Type.Optional(
        Type.Integer({
          minimum: MIN_EVENT_TIME,
          maximum: MAX_RANK_TIME,
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

/** Whether an Authorization header carries `Bearer <token>` (constant-time); the console checks its POSTs with it too. */
export function tokenMatches(header: string | undefined, token: string): boolean {
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
    schemaErrorFormatter,
  }).withTypeProvider<TypeBoxTypeProvider>();

  // JSON only (text/plain is 415, as for any other type), parsed refusing repeated keys and "__proto__".
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, parseJsonBody(body as string));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
  // Each path's methods, for a 405 with `Allow` on the others (HEAD routes come with GET routes).
  const methods = new Map<string, Set<string>>();
  app.addHook('onRoute', (route) => {
    const set = methods.get(route.url) ?? new Set<string>();
    for (const m of [route.method].flat()) set.add(m);
    methods.set(route.url, set);
  });

  await app.register(swagger, {
    openapi: {
      info: { title: 'Tributary scoring', version: '1', description: 'Ranks candidate ads by predicted CTR' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (err instanceof NoModelError) return reply.code(503).send({ error: 'not ready', reason: err.message });
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      deps.metrics.rejected.inc({ reason: err.code });
      const type = req.headers['content-type'] ?? 'none';
      return reply.code(415).send({ error: 'unsupported media type', reason: `content type ${type}: send JSON` });
    }
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
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?', 1)[0] as string;
    const allowed = methods.get(path);
    if (!allowed) return reply.code(404).send({ error: 'not found', reason: `no route ${req.method} ${req.url}` });
    const allow = [...allowed].sort().join(', ');
    deps.metrics.rejected.inc({ reason: 'method' });
    return reply
      .code(405)
      .header('allow', allow)
      .send({ error: 'method not allowed', reason: `${path} answers ${allow}, not ${req.method}` });
  });

  app.addHook('onResponse', async (req, reply) => {
    if (req.routeOptions.url !== '/v1/rank' || req.method !== 'POST') return;
    deps.metrics.requests.observe({ code: `${Math.floor(reply.statusCode / 100)}xx` }, reply.elapsedTime / 1000);
  });

  app.post(
    '/v1/rank',
    {
      schema: {
        description: `Ranks the candidate ads for one user and page. A body over ${options.bodyLimit} bytes is refused (413).`,
        body: rankBodySchema(options.maxCandidates),
        response: { 200: RankReply, '4xx': Problem, 503: Problem },
        ...(options.token ? { security: [{ bearer: [] }] } : {}),
      },
      // The reply as JSON.stringify writes it: the schema's compiled serializer checks each nullable number against
      // both of its types, which cost more than the stringify (the schema still documents and types the reply).
      serializerCompiler: () => JSON.stringify,
      onRequest: options.token
        ? async (req, reply) => {
            if (!tokenMatches(req.headers.authorization, options.token as string)) {
              deps.metrics.rejected.inc({ reason: 'unauthorized' });
              return reply.code(401).send({ error: 'unauthorized', reason: 'missing or wrong bearer token' });
            }
          }
        : undefined,
    },
    // The schema is the whole check: what the document allows is ranked (a request event's Kafka checks, such as its
    // time within a day of now, concern events that move watermarks; a ranking only reads as of its time).
    async (req) => deps.ranker.rank(adRequestOf(req.body)),
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

/** Fastify's wording for schema errors, but a refused key id says why. */
function schemaErrorFormatter(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const reasons = errors.map((e) => {
    const where = `${dataVar}${e.instancePath}`;
    return e.keyword === 'pattern' && e.params.pattern === KEY_ID_PATTERN
      ? `${where} must not contain "${KEY_SEPARATOR}" (it joins the fields of entity keys) or an unpaired surrogate`
      : `${where} ${e.message}`;
  });
  return new Error(reasons.join(', '));
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
