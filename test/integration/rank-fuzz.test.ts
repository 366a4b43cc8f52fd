// POST /v1/rank fuzzed from the OpenAPI document `tributary serve` publishes (no hand copy of the schema): a real
// server over real Valkey holding a generated log's features, with a model trained on that log. For every request:
// no 5xx, and a reason on every 4xx; every body the document allows is ranked (200; 413 only past the body limit the
// document states), the same way when sent again; every body it refuses is a 400; without the token, 401.
// Seeded and short here; longer: `FUZZ_RUNS=20000 npm run fuzz:rank` (FUZZ_SEED=n replays a seed).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Valkey } from 'iovalkey';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate } from '../../src/events/generator.ts';
import type { AdImpression } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { ModelRegistry } from '../../src/model/registry.ts';
import { applyLog } from '../../src/online/part-writer.ts';
import { ValkeyStore } from '../../src/online/valkey-store.ts';
import { allowed, type Examples, refused, type Schema } from '../property/json-schema-arbitrary.ts';
import { replayRecords, trainAndRegister } from '../support/models.ts';
import { freePort, VALKEY_URL } from '../support/services.ts';
import { until } from '../support/streaming.ts';

const RUNS = Number(process.env.FUZZ_RUNS ?? 250);
const SEED = Number(process.env.FUZZ_SEED ?? 20261201);
const TIMEOUT = 60_000 + RUNS * 50;
const TOKEN = 'fuzz-token';
const ns = `rankfuzz${Date.now()}.`;
const dir = mkdtempSync(join(tmpdir(), 'rank-fuzz-'));
const agent = new Agent({ keepAlive: true, maxSockets: 8 });
let server: ChildProcess;
let stderr = '';
let port = 0;
let body: Schema;
let bodyLimit = 0;
const examples: Record<string, unknown[]> = {};

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

function send(o: { method?: string; path?: string; body?: string | Buffer; headers?: Record<string, string> }) {
  return new Promise<Answer>((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, agent, method: o.method ?? 'POST', path: o.path ?? '/v1/rank', headers: o.headers },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      },
    );
    req.on('error', reject);
    req.end(o.body);
  });
}

const auth = { authorization: `Bearer ${TOKEN}` };
const json = { 'content-type': 'application/json', ...auth };

/** No 5xx, and a 4xx says what and why. */
function expectAnswered(a: Answer, what: string): Record<string, unknown> {
  expect(a.status, `${what} -> ${a.text}`).toBeLessThan(500);
  const parsed = a.text ? (JSON.parse(a.text) as Record<string, unknown>) : {};
  if (a.status >= 400) {
    expect(typeof parsed.error, `${what}: ${a.text}`).toBe('string');
    expect(parsed.reason, `${what}: ${a.text}`).toEqual(expect.stringMatching(/\S/));
  }
  return parsed;
}

type Ranked = { ad_id: string; rank: number; pctr: number; bid: number | null; ecpm: number | null };
interface RankBody {
  time?: number;
  candidates: { ad_id: string; bid?: number | null }[];
}

/** What any ranking of `req` must be: every candidate once, ranked 1..n by eCPM (all bid) or pCTR. */
function expectRanking(req: RankBody, reply: Record<string, unknown>, what: string): void {
  const ranked = reply.ranked as Ranked[];
  expect(ranked.map((c) => c.ad_id).sort(), what).toEqual(req.candidates.map((c) => c.ad_id).sort());
  expect(
    ranked.map((c) => c.rank),
    what,
  ).toEqual(ranked.map((_, i) => i + 1));
  if (req.time !== undefined) expect(reply.event_time, what).toBe(req.time);
  const allBid = req.candidates.every((c) => c.bid != null);
  for (const c of ranked) {
    expect(c.pctr >= 0 && c.pctr <= 1, what).toBe(true);
    if (c.bid == null) expect(c.ecpm, what).toBeNull();
    else expect(Number.isFinite(c.ecpm), what).toBe(true);
  }
  const key = (c: Ranked) => (allBid ? (c.ecpm as number) : c.pctr);
  for (let i = 1; i < ranked.length; i++)
    expect(key(ranked[i - 1] as Ranked) >= key(ranked[i] as Ranked), what).toBe(true);
}

/** A ranking's content, without the moment it was scored (nor, for a request without `time`, the "now" it read at). */
const rankingOf = (req: RankBody, reply: Record<string, unknown>) => {
  const { scored_time: _, event_time, ...rest } = reply;
  return req.time === undefined ? rest : { ...rest, event_time };
};

beforeAll(async () => {
  // Features in Valkey and a model, from one generated log: requests naming its ids and times read real values.
  const features = new FeatureSet(DEFAULT_GROUPS);
  const log = generate({ seed: 5, days: 1, impressionsPerDay: 2000 });
  const impressions = log.filter((r) => r.record.kind === 'impression').map((r) => r.record.event as AdImpression);
  const valkey = new Valkey(VALKEY_URL);
  const end = Math.max(...impressions.map((i) => i.event_time));
  const store = new ValkeyStore(valkey, {
    features,
    namespace: ns,
    ttlSeconds: 3600,
    retentionMs: features.retentionMs,
  });
  await applyLog(store, log, 'fuzz', end);
  valkey.disconnect();
  const registry = new ModelRegistry(join(dir, 'models'));
  await registry.promote(await trainAndRegister(registry, features, replayRecords(log), 1));
  for (const k of ['user_id', 'publisher_id', 'ad_id', 'campaign_id', 'advertiser_id', 'category', 'device', 'os'])
    examples[k] = [...new Set(impressions.map((i) => i[k as keyof AdImpression]))].slice(0, 50);
  examples.time = [end, end + 60_000, end - 3600_000];

  port = await freePort();
  // biome-ignore format: one argument per flag reads best
  server = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--valkey', VALKEY_URL,
    '--namespace', ns, '--models', registry.dir, '--port', String(port), '--token', TOKEN, '--max-candidates', '16',
    '--body-limit', String(48 * 1024), '--rank-timeout', '2000'], { stdio: ['ignore', 'ignore', 'pipe'] });
  server.stderr?.on('data', (c) => (stderr += c));
  const ready = async () => (await send({ method: 'GET', path: '/readyz' }).catch(() => null))?.status === 200;
  await until('the server to be ready', ready, 60_000);

  // The document the server publishes is the only description of the body the generators use.
  // biome-ignore lint/suspicious/noExplicitAny: a walk into the published document
  const doc = JSON.parse((await send({ method: 'GET', path: '/openapi.json' })).text) as any;
  const post = doc.paths['/v1/rank'].post;
  body = post.requestBody.content['application/json'].schema;
  bodyLimit = Number(/over (\d+) bytes/.exec(post.description)?.[1]);
  expect(bodyLimit).toBeGreaterThan(0);
}, 180_000);

afterAll(() => {
  agent.destroy();
  if (server && server.exitCode === null) server.kill('SIGTERM');
});

const options = (runs: number) => ({ seed: SEED, numRuns: Math.max(1, Math.round(runs)) });
/** A body as a client may write it: compact or indented. */
const text = (value: unknown, indent: boolean) => JSON.stringify(value, null, indent ? 2 : undefined);

describe('POST /v1/rank from its OpenAPI document', () => {
  it(
    'ranks every body the document allows, the same way when sent again',
    async () => {
      const contentType = fc.constantFrom('application/json', 'application/json; charset=utf-8');
      await fc.assert(
        fc.asyncProperty(
          fc.constant(null).chain(() => allowed(body, examples as Examples)),
          fc.boolean(),
          contentType,
          async (value, indent, type) => {
            const payload = text(value, indent);
            const headers = { ...json, 'content-type': type };
            const first = await send({ body: payload, headers });
            const reply = expectAnswered(first, payload.slice(0, 300));
            if (Buffer.byteLength(payload) > bodyLimit) return void expect(first.status).toBe(413);
            expect(first.status, `${payload.slice(0, 300)} -> ${first.text.slice(0, 300)}`).toBe(200);
            expectRanking(value as RankBody, reply, payload.slice(0, 300));
            const again = expectAnswered(await send({ body: payload, headers }), payload.slice(0, 300));
            expect(rankingOf(value as RankBody, again)).toEqual(rankingOf(value as RankBody, reply));
          },
        ),
        options(RUNS),
      );
    },
    TIMEOUT,
  );

  it(
    'refuses every body the document refuses with a 400 and a reason',
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.constant(null).chain(() => refused(body, examples as Examples)),
          async ({ value, broken }) => {
            const payload = text(value, false);
            const a = await send({ body: payload, headers: json });
            expectAnswered(a, broken);
            expect(a.status, `${broken}: ${payload.slice(0, 300)} -> ${a.text}`).toBe(
              Buffer.byteLength(payload) > bodyLimit ? 413 : 400,
            );
          },
        ),
        options(RUNS),
      );
    },
    TIMEOUT,
  );

  it(
    'answers 401 with a reason to any request without the right token',
    async () => {
      const anyBody = fc.oneof(
        allowed(body, examples as Examples).map((v) => text(v, false)),
        refused(body).map((r) => text(r.value, false)),
        fc.string(),
      );
      const header = fc.constantFrom(undefined, '', 'Bearer', `Bearer ${TOKEN}x`, TOKEN, `bearer ${TOKEN}`);
      await fc.assert(
        fc.asyncProperty(anyBody, header, async (payload, authorization) => {
          const headers: Record<string, string> = { 'content-type': 'application/json' };
          if (authorization !== undefined) headers.authorization = authorization;
          const a = await send({ body: payload, headers });
          expectAnswered(a, `${authorization}: ${payload.slice(0, 200)}`);
          expect(a.status).toBe(401);
        }),
        options(RUNS / 4),
      );
    },
    TIMEOUT,
  );

  it(
    'answers malformed HTTP with the 4xx it names: repeated keys, "__proto__", cut JSON, other types and methods',
    async () => {
      const valid = allowed(body, examples as Examples).map((v) => text(v, false));
      const cases = fc.oneof(
        // A key named twice, at the top or in a candidate (the same value both times): 400 naming it.
        fc.tuple(allowed(body, examples as Examples), fc.boolean(), fc.nat()).map(([v, inCandidate, n]) => {
          const o = v as Record<string, unknown> & { candidates: Record<string, unknown>[] };
          const twice = (x: Record<string, unknown>, k: string) =>
            `{${JSON.stringify(k)}:${JSON.stringify(x[k])},${JSON.stringify(x).slice(1)}`;
          const target = inCandidate ? (o.candidates[n % o.candidates.length] as Record<string, unknown>) : o;
          const keys = Object.keys(target);
          const k = keys[n % keys.length] as string;
          const { candidates, ...rest } = o;
          const list = candidates.map((c) => (c === target ? twice(c, k) : JSON.stringify(c)));
          const payload = inCandidate
            ? `{"candidates":[${list.join(',')}],${JSON.stringify(rest).slice(1)}`
            : twice(o, k);
          const reason = new RegExp(`duplicate key ${JSON.stringify(k).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`);
          return { payload, type: 'application/json', status: 400, reason };
        }),
        valid.map((t) => ({
          payload: `{"__proto__":{"polluted":true},${t.slice(1)}`,
          type: 'application/json',
          status: 400,
          reason: /__proto__/,
        })),
        fc.tuple(valid, fc.nat()).map(([t, n]) => ({
          payload: t.slice(0, n % t.length),
          type: 'application/json',
          status: 400,
          reason: /\S/,
        })),
        fc
          .tuple(
            valid,
            fc.constantFrom('text/plain', 'application/xml', 'application/x-www-form-urlencoded', 'foo/bar'),
          )
          .map(([payload, type]) => ({ payload, type, status: 415, reason: /send JSON/ })),
        fc.string({ unit: 'binary', maxLength: 64 }).map((payload) => ({
          payload,
          type: 'application/json',
          status: 400,
          reason: /\S/,
        })),
      );
      await fc.assert(
        fc.asyncProperty(cases, async (c) => {
          const a = await send({ body: c.payload, headers: { ...auth, 'content-type': c.type } });
          const reply = expectAnswered(a, c.payload.slice(0, 200));
          // The type is judged before the body is read; a JSON body is measured before it is parsed.
          const tooLarge = c.status !== 415 && Buffer.byteLength(c.payload) > bodyLimit;
          expect(a.status, `${c.type} ${c.payload.slice(0, 200)} -> ${a.text}`).toBe(tooLarge ? 413 : c.status);
          if (!tooLarge) expect(reply.reason).toMatch(c.reason);
        }),
        options(RUNS / 2),
      );
      const methods = fc.constantFrom('GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'POST');
      const paths = fc.constantFrom(['/v1/rank', 'POST'], ['/healthz', 'GET, HEAD'], ['/readyz', 'GET, HEAD']);
      await fc.assert(
        fc.asyncProperty(methods, paths, async (method, [path, allow]) => {
          fc.pre(!allow.includes(method));
          const a = await send({ method, path, headers: auth });
          expectAnswered(a, `${method} ${path}`);
          expect(a.status).toBe(405);
          expect(a.headers.allow).toBe(allow);
        }),
        options(RUNS / 8),
      );
    },
    TIMEOUT,
  );

  it('kept the server up throughout, logging no internal error', async () => {
    expect((await send({ method: 'GET', path: '/readyz' })).status).toBe(200);
    expect(stderr).not.toMatch(/ranking failed|"level":50/);
  });
});
