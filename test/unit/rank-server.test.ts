// POST /v1/rank's HTTP contract with the real server and ranker over an in-memory store (the model a stub giving
// pCTR 0.5): what the OpenAPI document allows is ranked, and what it refuses is a 4xx with a reason, in the
// document's own terms. The same over real Valkey and a trained model: test/integration/rank-fuzz.test.ts.
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { MemoryStore } from '../../src/online/memory-store.ts';
import { ScoringMetrics } from '../../src/scoring/metrics.ts';
import type { ServedModel } from '../../src/scoring/model-runtime.ts';
import { Ranker } from '../../src/scoring/ranker.ts';
import { buildServer } from '../../src/scoring/server.ts';

const features = new FeatureSet(DEFAULT_GROUPS);
const log = pino({ level: 'silent' });
const metrics = new ScoringMetrics();
const model = {
  version: 'stub',
  acquire() {
    return this;
  },
  done() {},
  async score(_batch: Float32Array, rows: number) {
    return new Float32Array(rows).fill(0.5);
  },
} as unknown as ServedModel;
const models = { model };
const ranker = new Ranker(
  { features, reader: new MemoryStore(features), models, metrics, log },
  { readTimeoutMs: 1_000 },
);
let app: Awaited<ReturnType<typeof buildServer>>;

beforeAll(async () => {
  app = await buildServer(
    { ranker, models, storeProblem: () => null, metrics, log },
    { maxCandidates: 10, bodyLimit: 64 * 1024 },
  );
  await app.ready();
});
afterAll(() => app.close());

const candidate = (ad: string, bid?: number) => ({
  ad_id: ad,
  campaign_id: 'cmp-1',
  advertiser_id: 'adv-1',
  category: 'cat-1',
  ...(bid === undefined ? {} : { bid }),
});
const good = () => ({
  request_id: 'r-1',
  user_id: 'u-1',
  publisher_id: 'pub-1',
  device: 'd',
  os: 'o',
  candidates: [candidate('ad-1', 1), candidate('ad-2', 2)],
});

async function rank(body: unknown, contentType = 'application/json') {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/rank',
    headers: { 'content-type': contentType },
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.statusCode, json: res.json() as Record<string, unknown> };
}

describe('POST /v1/rank contract', () => {
  it('ranks a bid at the document’s maximum, with a finite eCPM, and refuses a larger one', async () => {
    // biome-ignore lint/suspicious/noExplicitAny: a walk into the generated document
    const doc = app.swagger() as any;
    const max = doc.paths['/v1/rank'].post.requestBody.content['application/json'].schema.properties.candidates.items
      .properties.bid.maximum as number;
    expect(max).toBeGreaterThan(0);
    const ok = await rank({ ...good(), candidates: [candidate('ad-1', max), candidate('ad-2', 1)] });
    expect(ok.status, JSON.stringify(ok.json)).toBe(200);
    const ranked = ok.json.ranked as { ad_id: string; ecpm: number }[];
    expect(ranked.map((c) => c.ad_id)).toEqual(['ad-1', 'ad-2']);
    expect(ranked[0]?.ecpm).toBe(0.5 * max * 1000);
    for (const bid of [1e308, 2e307]) {
      const refused = await rank({ ...good(), candidates: [candidate('ad-1', bid)] });
      expect(refused.status).toBe(400);
      expect(refused.json.reason).toMatch(/bid must be <= /);
    }
  });

  it('ranks at any time the document allows (days ahead too) and refuses what it does not', async () => {
    const ahead = await rank({ ...good(), time: Date.now() + 2 * 86400_000 });
    expect(ahead.status, JSON.stringify(ahead.json)).toBe(200);
    const unsafe = await rank(JSON.stringify({ ...good(), time: 0 }).replace('"time":0', '"time":9007199254740993'));
    expect(unsafe.status).toBe(400);
    expect(unsafe.json.reason).toMatch(/body\/time must be <= /);
  });

  it('counts id lengths in characters, as maxLength does', async () => {
    const emoji = '😀'.repeat(200); // 400 UTF-16 units
    const res = await rank({ ...good(), user_id: emoji, candidates: [{ ...candidate('ad-1'), category: emoji }] });
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    expect((await rank({ ...good(), user_id: '😀'.repeat(257) })).status).toBe(400);
  });

  it('refuses ids that could name another entity, saying why', async () => {
    for (const body of [
      { ...good(), user_id: 'u-1|x' },
      { ...good(), publisher_id: 'p|1' },
      { ...good(), candidates: [{ ...candidate('ad-1'), category: 'x|y' }] },
      { ...good(), candidates: [{ ...candidate('ad-1'), ad_id: 'a|b' }] },
    ]) {
      const res = await rank(body);
      expect(res.status).toBe(400);
      expect(res.json.reason).toMatch(/must not contain "\|" \(it joins the fields of entity keys\)/);
    }
    const lone = await rank(JSON.stringify(good()).replace('"u-1"', '"u-\\ud800"'));
    expect(lone.status).toBe(400);
    expect(lone.json.reason).toMatch(/body\/user_id must not contain .*unpaired surrogate/);
    // Other ids are not keys: the separator is fine there.
    expect((await rank({ ...good(), request_id: 'r|1', device: 'a|b' })).status).toBe(200);
  });

  it('answers 415 to text/plain, naming the type', async () => {
    const res = await rank(good(), 'text/plain');
    expect(res.status).toBe(415);
    expect(res.json.reason).toMatch(/text\/plain/);
  });

  it('refuses a "__proto__" key and repeated keys, naming them, wherever they are', async () => {
    const text = JSON.stringify(good());
    const proto = await rank(`{"__proto__":{"x":1},${text.slice(1)}`);
    expect(proto.status).toBe(400);
    expect(proto.json.reason).toBe('"__proto__" is not an accepted key');
    const nestedProto = await rank(text.replace('"ad_id":"ad-2"', '"ad_id":"ad-2","__proto__":null'));
    expect(nestedProto.json.reason).toBe('"__proto__" is not an accepted key');

    const twice = await rank(text.replace('"user_id":"u-1"', '"user_id":"u-1","user_id":"u-2"'));
    expect(twice.status).toBe(400);
    expect(twice.json.reason).toMatch(/^duplicate key "user_id"/);
    // Spelt differently, the same key; and inside a candidate.
    const escaped = await rank(text.replace('"os":"o"', '"os":"o", "\\u006fs" :"p"'));
    expect(escaped.json.reason).toMatch(/^duplicate key "os"/);
    const inCandidate = await rank(text.replace('"bid":2', '"bid":2,"bid":3'));
    expect(inCandidate.json.reason).toMatch(/^duplicate key "bid"/);
    // A key's text inside a string value is not a key.
    const quoted = await rank(text.replace('"r-1"', '"r-1\\",\\"user_id\\":\\"u"'));
    expect(quoted.status, JSON.stringify(quoted.json)).toBe(200);
  });

  it('still calls bad JSON and an empty body 400 with a reason', async () => {
    for (const body of ['{"request_id": "x",', '', '[[[[[[[[[[[[[[[[[[[[[[[[[[[[', 'nul']) {
      const res = await rank(body);
      expect(res.status, body).toBe(400);
      expect(typeof res.json.reason, body).toBe('string');
    }
  });

  it('answers 405 with Allow to other methods on its paths, and 404 elsewhere', async () => {
    for (const [url, allowed] of [
      ['/v1/rank', 'POST'],
      ['/healthz', 'GET, HEAD'],
      ['/readyz', 'GET, HEAD'],
    ] as const)
      for (const method of ['GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'POST'] as const) {
        if (allowed.includes(method)) continue;
        const res = await app.inject({ method, url: `${url}?x=1` });
        expect(res.statusCode, `${method} ${url}`).toBe(405);
        expect(res.headers.allow).toBe(allowed);
        expect(res.json().reason).toMatch(new RegExp(`answers ${allowed}, not ${method}`));
      }
    expect((await app.inject({ method: 'PUT', url: '/v1/nope' })).statusCode).toBe(404);
  });
});

describe('request metrics', () => {
  it('times /v1/rank requests by status class, and nothing else', async () => {
    const count = async (code: string) =>
      (await metrics.requests.get()).values.find(
        (v) => v.metricName === 'tributary_rank_request_seconds_count' && v.labels.code === code,
      )?.value ?? 0;
    const [ok, bad] = [await count('2xx'), await count('4xx')];
    expect((await rank(good())).status).toBe(200);
    expect((await rank({ ...good(), candidates: [] })).status).toBe(400);
    await app.inject({ method: 'GET', url: '/healthz' });
    expect(await count('2xx')).toBe(ok + 1);
    expect(await count('4xx')).toBe(bad + 1);
  });
});
