// Scoring on real Kafka, Schema Registry and Valkey (a single node, or a Valkey Cluster), with models trained by the
// real backfill + `train`: POST /v1/rank scores equal the ONNX model run on the backfill's vector for the same moment;
// a model for other definitions is refused with the difference named; promotion swaps models under load without a
// failed request; malformed bodies get 4xx, never 5xx; a slow or stopped Valkey gives flagged defaults within the
// budget; and `tributary score`'s consumer turns AdRequest events into ScoredRanking events (bad ones: dead letters).
// The read cache is on, as `tributary serve` has it.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Cluster, Redis } from 'iovalkey';
import * as ort from 'onnxruntime-node';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Replay, type ReplayRecord } from '../../src/backfill/replay.ts';
import { deadLetterTopic, topicOf } from '../../src/events/catalog.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AdImpression, type AdRequest, EVENT_KINDS, type ScoredRanking } from '../../src/events/types.ts';
import { frame } from '../../src/events/wire.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { KafkaEventLog } from '../../src/kafka/event-log.ts';
import { ModelRegistry } from '../../src/model/registry.ts';
import { connectValkey, rankingClient } from '../../src/online/connect.ts';
import { sharedEntityCache } from '../../src/online/read-cache.ts';
import { ValkeyStore } from '../../src/online/valkey-store.ts';
import { ScoreConsumer } from '../../src/scoring/consumer.ts';
import { ScoringMetrics } from '../../src/scoring/metrics.ts';
import { ModelRuntime } from '../../src/scoring/model-runtime.ts';
import { Ranker } from '../../src/scoring/ranker.ts';
import { buildServer } from '../../src/scoring/server.ts';
import { replayRecords, trainAndRegister } from './models.ts';
import { ReferenceState } from './reference.ts';
import { KAFKA_BROKERS, REGISTRY_URL } from './services.ts';
import { LATENESS_MS, publishScenario, readPartitions, testStream, until } from './streaming.ts';

export interface ScoringTarget {
  name: string;
  url: string;
  cluster: boolean;
}

export function scoringSuite(target: ScoringTarget): void {
  const ns = `score${Date.now()}.`;
  const kafka = createKafka(KAFKA_BROKERS);
  const features = new FeatureSet(DEFAULT_GROUPS);
  const log = pino({ level: 'silent' });
  const TOKEN = 'test-token';
  const MAX_CANDIDATES = 50;
  // Generous for a busy shared machine (a 30-candidate read can take tens of ms there); the outage test proves the
  // bound holds against a Valkey that does not answer for seconds.
  const TIMEOUT_MS = 250;
  // The stream writes with its own client; scoring's is the one `tributary serve` makes (with its read cache).
  let writer: Redis | Cluster;
  let valkey: Redis | Cluster;
  let cache: ReturnType<typeof sharedEntityCache>;
  let ranker: Ranker;
  const registry = new ModelRegistry(mkdtempSync(join(tmpdir(), 'models-')));
  const metrics = new ScoringMetrics();
  const models = new ModelRuntime(registry, features, metrics, log, { pollMs: 50 });
  const openRanker = () =>
    new Ranker(
      {
        features,
        reader: new ValkeyStore(valkey, {
          features,
          namespace: ns,
          ttlSeconds: 1,
          retentionMs: features.retentionMs,
          cache,
        }),
        models,
        metrics,
        log,
      },
      { readTimeoutMs: TIMEOUT_MS },
    );

  let serde: EventSerde;
  let records: ReplayRecord[]; // what the stream applied, per partition in offset order
  let impressions: AdImpression[];
  let versions: { a: string; b: string; other: string };
  let base: string;
  let app: Awaited<ReturnType<typeof buildServer>>;

  beforeAll(async () => {
    writer = await connectValkey(target.url, { enableAutoPipelining: true });
    writer.on('error', () => {}); // one test takes Valkey down on purpose
    valkey = await rankingClient(target.url);
    valkey.on('error', () => {});
    expect(valkey.isCluster).toBe(target.cluster);
    cache = sharedEntityCache(features, valkey, log);
    ranker = openRanker();
    serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    const scenario = await publishScenario(kafka, serde, ns, { seed: 5, days: 1, impressionsPerDay: 4000 });
    const { service } = testStream(kafka, writer, features, ns, { maxBatch: 1000 });
    await service.start();
    await until('the stream to process every message', () => service.processed >= scenario.sent);
    await service.stop();
    records = [];
    for (const p of await readPartitions(kafka, ns, scenario.sent)) {
      const source = p.topic === topicOf('impression', ns) ? 'impression' : 'click';
      for (const m of p.messages) {
        const event = await serde.decode(source, m.value).catch(() => undefined); // the scenario's bad messages
        if (event) records.push({ source, partition: `${p.topic}/${p.partition}`, event } as ReplayRecord);
      }
    }
    impressions = scenario.log.filter((r) => r.record.kind === 'impression').map((r) => r.record.event as AdImpression);

    const training = replayRecords(scenario.log);
    const other = new FeatureSet(DEFAULT_GROUPS.slice(0, -1)); // a model for definitions without the last group
    versions = {
      a: await trainAndRegister(registry, features, training, 1),
      b: await trainAndRegister(registry, features, training, 0.01),
      other: await trainAndRegister(new ModelRegistry(registry.dir), other, training, 1),
    };
    await registry.promote(versions.a);
    await models.start();
    app = await buildServer(
      {
        ranker,
        models,
        storeProblem: () => (valkey.status === 'ready' ? null : `valkey ${valkey.status}`),
        metrics,
        log,
      },
      { maxCandidates: MAX_CANDIDATES, bodyLimit: 64 * 1024, token: TOKEN },
    );
    base = await app.listen({ port: 0, host: '127.0.0.1' });
  }, 240_000);

  afterAll(async () => {
    await app?.close();
    await models.stop();
    cache.tracked.close();
    valkey.disconnect();
    writer.disconnect();
  });

  const end = () => Math.max(...impressions.map((i) => i.event_time));

  /** A request for the latest impression's user and page, over `n` distinct ads seen in the log plus one never seen. */
  function rankBody(n: number, t = end() + 60_000) {
    const last = impressions[impressions.length - 1] as AdImpression;
    const ads = new Map<string, AdImpression>();
    for (const i of impressions) if (ads.size < n) ads.set(i.ad_id, i);
    const candidates = [...ads.values()].map((i, k) => ({
      ad_id: i.ad_id,
      campaign_id: i.campaign_id,
      advertiser_id: i.advertiser_id,
      category: i.category,
      bid: 0.5 + (k % 7) * 0.25,
    }));
    candidates.push({
      ad_id: 'ad-never-seen',
      campaign_id: 'cmp-new',
      advertiser_id: 'adv-new',
      category: 'cat-1',
      bid: 1,
    });
    return {
      request_id: `r-${Math.random()}`,
      user_id: last.user_id,
      publisher_id: last.publisher_id,
      device: last.device,
      os: last.os,
      time: t,
      candidates,
    };
  }

  async function post(body: unknown, headers: Record<string, string> = {}) {
    const res = await fetch(`${base}/v1/rank`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}`, ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> & ScoredRankingReply };
  }
  type ScoredRankingReply = Omit<ScoredRanking, 'ranked'> & {
    ranked: (ScoredRanking['ranked'][number] & { unknown: string[] })[];
  };

  describe(`POST /v1/rank (${target.name})`, () => {
    it('scores what the ONNX model gives on the backfill’s vectors for the same moment, ranked by eCPM', async () => {
      const body = rankBody(30);
      const { status, json } = await post(body);
      expect(status, JSON.stringify(json)).toBe(200);
      expect(json.model_version).toBe(versions.a);
      expect(json.features_defaulted).toBe(false);

      // The backfill's replay of what the stream applied, read at the request's moment.
      const reference = new ReferenceState(features);
      const replay = new Replay(features, LATENESS_MS, { state: reference });
      for (const r of records) replay.apply(r);
      const contexts = body.candidates.map((c) => ({ ...c, user_id: body.user_id, publisher_id: body.publisher_id }));
      const plan = features.plan(contexts, body.time);
      const vectors = features.assemble(plan, reference.store.readSync(plan.requests));
      const f = features.names.length;
      const x = new Float32Array(vectors.length * f);
      vectors.forEach((v, i) => {
        x.set(v, i * f);
      });
      const session = await ort.InferenceSession.create(await registry.read(versions.a));
      const out = await session.run({ features: new ort.Tensor('float32', x, [vectors.length, f]) });
      const expected = out.pctr?.data as Float32Array;
      await session.release();

      const byAd = new Map(json.ranked.map((c) => [c.ad_id, c]));
      body.candidates.forEach((c, i) => {
        const got = byAd.get(c.ad_id);
        expect(Math.abs((got?.pctr as number) - (expected[i] as number)), c.ad_id).toBeLessThan(1e-6);
        expect(got?.ecpm).toBeCloseTo((got?.pctr as number) * (c.bid as number) * 1000, 9);
      });
      expect(new Set(expected).size).toBeGreaterThan(5); // the features (and so the scores) differ per candidate
      expect(json.ranked.map((c) => c.rank)).toEqual(body.candidates.map((_, i) => i + 1));
      const ecpms = json.ranked.map((c) => c.ecpm as number);
      expect(ecpms).toEqual([...ecpms].sort((a, b) => b - a));
      // Unknown entities are named; their features are the definitions' defaults.
      expect(byAd.get('ad-never-seen')?.unknown).toEqual(expect.arrayContaining(['ad', 'campaign', 'advertiser']));
      expect(vectors.at(-1)?.[features.names.indexOf('ad__impressions_7d')]).toBe(0);
      expect(byAd.get(body.candidates[0]?.ad_id as string)?.unknown).not.toContain('ad');
    });

    it('refuses a model trained for other definitions, naming the difference, and keeps serving', async () => {
      await registry.promote(versions.other);
      await models.refresh();
      expect(models.refusal?.version).toBe(versions.other);
      expect(models.refusal?.reason).toMatch(/missing features: ad_publisher__.*definitions version mismatch/);
      expect(models.model?.version).toBe(versions.a);
      const { status, json } = await post(rankBody(5));
      expect(status).toBe(200);
      expect(json.model_version).toBe(versions.a);
      expect((await metrics.modelRefusals.get()).values[0]?.value).toBe(1);
      await registry.rollback();
      await models.refresh();
    });

    it('swaps models under concurrent load without failing a request', async () => {
      const seen = new Map<string, number>();
      const statuses: number[] = [];
      let promoted = false;
      const started = Date.now();
      const worker = async () => {
        while (Date.now() - started < 2_500) {
          if (!promoted && Date.now() - started > 800) {
            promoted = true;
            await registry.promote(versions.b); // the runtime notices within its poll interval
          }
          const { status, json } = await post(rankBody(20));
          statuses.push(status);
          seen.set(json.model_version, (seen.get(json.model_version) ?? 0) + 1);
        }
      };
      await Promise.all(Array.from({ length: 6 }, worker));
      expect(statuses.filter((s) => s !== 200)).toEqual([]);
      expect([...seen.keys()].sort()).toEqual([versions.a, versions.b].sort());
      expect(models.model?.version).toBe(versions.b);
      // Candidates repeat across requests: the read cache (tracking every node that holds them) answered some.
      expect(cache.tracked.active).toBe(true);
      expect(cache.tracked.stats.hits).toBeGreaterThan(0);
    });

    it('answers every malformed request with a 4xx and a reason, never a 5xx', async () => {
      const good = rankBody(3);
      const c0 = good.candidates[0] as Record<string, unknown>;
      const without = (k: string) => Object.fromEntries(Object.entries(good).filter(([key]) => key !== k));
      const cases: { name: string; body: unknown; headers?: Record<string, string>; status?: number }[] = [
        { name: 'bad JSON', body: '{"request_id": "x",' },
        { name: 'not an object', body: '[1,2,3]' },
        { name: 'null', body: 'null' },
        { name: 'empty body', body: '' },
        { name: 'prototype pollution', body: `{"__proto__": {"x": 1}, ${JSON.stringify(good).slice(1)}` },
        {
          name: 'wrong content type',
          body: '<r/>',
          headers: { 'content-type': 'application/xml' },
          status: 415,
        },
        { name: 'text body', body: JSON.stringify(good), headers: { 'content-type': 'text/plain' } },
        { name: 'no token', body: good, headers: { authorization: '' }, status: 401 },
        { name: 'wrong token', body: good, headers: { authorization: 'Bearer nope' }, status: 401 },
        { name: 'huge body', body: { ...good, user_id: 'u'.repeat(100_000) }, status: 413 },
        { name: 'too many candidates', body: { ...good, candidates: rankBody(60).candidates } },
        { name: 'no candidates', body: { ...good, candidates: [] } },
        { name: 'unknown field', body: { ...good, extra: 1 } },
        { name: 'unknown candidate field', body: { ...good, candidates: [{ ...c0, colour: 'red' }] } },
        { name: 'bid as a string', body: { ...good, candidates: [{ ...c0, bid: '1.5' }] } },
        { name: 'negative bid', body: { ...good, candidates: [{ ...c0, bid: -1 }] } },
        { name: 'infinite bid', body: JSON.stringify(good).replace(/"bid":[0-9.]+/, '"bid":1e999') },
        { name: 'empty id', body: { ...good, user_id: '' } },
        { name: 'time as text', body: { ...good, time: 'now' } },
        { name: 'fractional time', body: { ...good, time: 1.5e12 + 0.5 } },
        { name: 'time before 2000', body: { ...good, time: 5 } },
        { name: 'time past the document’s maximum', body: { ...good, time: Date.UTC(2100, 0, 1) + 1 } },
        { name: 'candidates not a list', body: { ...good, candidates: 'ad-1' } },
        { name: 'nested junk', body: { ...good, candidates: [[[[[]]]]] } },
      ];
      for (const k of Object.keys(good)) if (k !== 'time') cases.push({ name: `missing ${k}`, body: without(k) });
      // Seeded mutations: every required field set to a value of a wrong type.
      const wrong = [42, true, null, [], {}, 'x'.repeat(300), -1.5];
      for (const k of ['request_id', 'user_id', 'publisher_id', 'device', 'os', 'candidates'])
        for (const v of wrong)
          cases.push({ name: `${k}=${JSON.stringify(v).slice(0, 10)}`, body: { ...good, [k]: v } });
      for (const k of ['ad_id', 'campaign_id', 'advertiser_id', 'category'])
        for (const v of wrong)
          cases.push({ name: `candidate ${k}`, body: { ...good, candidates: [{ ...c0, [k]: v }] } });

      for (const c of cases) {
        const { status, json } = await post(c.body, c.headers);
        expect(status, `${c.name}: ${JSON.stringify(json)}`).toBeGreaterThanOrEqual(400);
        expect(status, c.name).toBeLessThan(500);
        if (c.status) expect(status, c.name).toBe(c.status);
        expect(typeof json.reason, c.name).toBe('string');
      }
      const other = await fetch(`${base}/v1/nope`);
      expect(other.status).toBe(404);
      expect((await post(good)).status).toBe(200); // and the server is fine
    });

    it('serves /healthz, /readyz, /metrics and the OpenAPI document', async () => {
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      expect(await (await fetch(`${base}/readyz`)).json()).toEqual({ status: 'ready' });
      const text = await (await fetch(`${base}/metrics`)).text();
      expect(text).toMatch(/tributary_rank_stage_seconds_count\{stage="onnx"\} [1-9]/);
      const doc = (await (await fetch(`${base}/openapi.json`)).json()) as { paths: Record<string, unknown> };
      expect(doc.paths['/v1/rank']).toMatchObject({ post: { requestBody: expect.anything() } });
    });

    it('ranks with flagged defaults within the budget when Valkey is slow or down, and recovers', async () => {
      const timed = async () => {
        const t0 = performance.now();
        const r = await post(rankBody(20));
        return { ...r, ms: performance.now() - t0 };
      };
      // A real server that answers nothing for 3 s (every master of a cluster).
      const nodes = writer.isCluster ? (writer as Cluster).nodes('master') : [writer as Redis];
      await Promise.all(nodes.map((n) => n.call('CLIENT', 'PAUSE', '3000', 'ALL')));
      const slow = await timed();
      expect(slow.status).toBe(200);
      expect(slow.json.features_defaulted).toBe(true);
      expect(slow.ms).toBeLessThan(TIMEOUT_MS + 400); // the budget plus HTTP and ONNX on a busy machine
      await until(
        'Valkey to answer again',
        async () => (await post(rankBody(3))).json.features_defaulted === false,
        10_000,
      );

      // A cluster's master going down is a failover, not an outage: the single node's run takes Valkey away.
      if (target.cluster) return;
      execFileSync('redis-cli', ['-u', target.url, 'shutdown', 'save']);
      const down = await timed();
      expect(down.status).toBe(200);
      expect(down.json.features_defaulted).toBe(true);
      expect(down.ms).toBeLessThan(TIMEOUT_MS + 400);
      expect((await fetch(`${base}/readyz`)).status).toBe(503);
      execFileSync('bash', ['scripts/services/valkey.sh', 'start'], { stdio: 'ignore' });
      await until(
        'the scorer to reconnect by itself',
        async () => (await post(rankBody(3))).json.features_defaulted === false,
        20_000,
      );
      const defaulted = (await metrics.rankings.get()).values.find((v) => v.labels.features === 'defaults');
      expect(defaulted?.value).toBeGreaterThanOrEqual(2);
    });
  });

  describe(`tributary score (${target.name})`, () => {
    it('turns AdRequest events into ScoredRanking events and dead-letters bad ones with a reason', async () => {
      const consumer = new ScoreConsumer(
        {
          eventLog: new KafkaEventLog(kafka, KAFKA_BROKERS),
          serde,
          ranker,
          hasModel: () => models.model !== undefined,
          metrics,
          log,
        },
        { namespace: ns, groupId: `${ns}score`, maxCandidates: MAX_CANDIDATES, concurrency: 4 },
      );
      const requests: AdRequest[] = Array.from({ length: 12 }, (_, i) => {
        const b = rankBody(10);
        return {
          request_id: `kreq-${i}`,
          event_time: b.time,
          user_id: b.user_id,
          publisher_id: b.publisher_id,
          category: null,
          device: b.device,
          os: b.os,
          candidates: b.candidates.map((c) => ({ ...c, bid: i % 2 ? c.bid : null })),
        };
      });
      const producer = kafka.producer();
      await producer.connect();
      const topic = topicOf('request', ns);
      const tooMany = { ...(requests[0] as AdRequest), request_id: 'too-many', candidates: rankBody(60).candidates };
      await producer.send({
        topic,
        messages: [
          ...requests.map((r) => ({ key: r.request_id, value: serde.encode('request', r) })),
          { key: 'bad', value: Buffer.from('not avro at all') },
          { key: 'bad', value: frame(serde.schemaId('request'), Buffer.from([1, 2, 3])) },
          { key: 'bad', value: serde.encode('request', tooMany) },
        ],
      });
      await producer.disconnect();
      await consumer.start();
      await until('every request to be handled', () => consumer.scored + consumer.deadLettered >= requests.length + 3);
      await consumer.stop();
      expect(consumer.scored).toBe(requests.length);

      const scored: ScoredRanking[] = [];
      const letters: string[] = [];
      const reader = kafka.consumer({ groupId: `${ns}score-reader` });
      await reader.connect();
      await reader.subscribe({ topics: [topicOf('scored', ns), deadLetterTopic(ns)], fromBeginning: true });
      await reader.run({
        eachMessage: async ({ topic: t, message }) => {
          if (t === topicOf('scored', ns)) scored.push(await serde.decode('scored', message.value));
          else if (String(message.headers?.source_topic) === topic) letters.push(String(message.headers?.reason));
        },
      });
      await until('the rankings and dead letters', () => scored.length >= requests.length && letters.length >= 3);
      await reader.disconnect();
      expect(scored.map((s) => s.request_id).sort()).toEqual(requests.map((r) => r.request_id).sort());
      for (const s of scored) {
        expect(s.model_version).toBe(models.model?.version);
        expect(s.ranked).toHaveLength(11);
        expect(s.ranked.map((c) => c.rank)).toEqual(Array.from({ length: 11 }, (_, i) => i + 1));
      }
      expect(letters.sort()).toEqual([
        expect.stringMatching(/more than the limit of 50/),
        expect.stringMatching(/^undecodable/),
        expect.stringMatching(/magic byte/),
      ]);
    });
  });
}
