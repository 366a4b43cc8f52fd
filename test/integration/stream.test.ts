// The stream service on real Kafka, Schema Registry and Valkey: the online state equals an in-process replay of
// the same topics, bad and late events land in the dead-letter topic with reasons, and nothing else is lost; a second
// group writing only ClickHouse records every message once with the same verdicts and sends no dead letters.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Valkey } from 'iovalkey';
import { afterAll, describe, expect, it } from 'vitest';
import { deadLetterTopic } from '../../src/events/catalog.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AdImpression, EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import { ensureOfflineSchema } from '../../src/offline/schema.ts';
import { OfflineSink } from '../../src/offline/sink.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import {
  expectSameVectors,
  LATENESS_MS,
  publishScenario,
  readPartitions,
  referenceState,
  testStream,
  until,
} from '../support/streaming.ts';

const ns = `st${Date.now()}.`;
const kafka = createKafka(KAFKA_BROKERS);
const valkey = new Valkey(VALKEY_URL, { enableAutoPipelining: true });
const features = new FeatureSet(DEFAULT_GROUPS);
afterAll(() => valkey.disconnect());

describe('tributary stream', () => {
  it('computes the same online features as an uninterrupted in-process replay, and dead-letters bad and late events', async () => {
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    const { log, bad, sent } = await publishScenario(kafka, serde, ns, {
      seed: 21,
      days: 1,
      impressionsPerDay: 6000,
      lateShare: 0.04,
      duplicateShare: 0.03,
    });

    const { service, online, metrics } = testStream(kafka, valkey, features, ns, { maxBatch: 700 });
    // Scraped as Prometheus would: every message waits before the stream starts.
    const gauge = async (name: string) =>
      (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name)?.values ?? [];
    const sum = (vs: { value: number }[]) => vs.reduce((s, v) => s + v.value, 0);
    const started = Date.now();
    expect(sum(await gauge('tributary_stream_consumer_lag'))).toBe(sent);
    await service.start();
    await until('the stream to process every message', () => service.processed >= sent);
    // Lag reaches 0 once caught up (the gauges are read at most once a second).
    await until('the lag to reach 0', async () => sum(await gauge('tributary_stream_consumer_lag')) === 0, 10_000);
    await service.stop();
    expect(service.processed).toBe(sent);
    // Freshness: now minus the newest applied event time, which is the watermark the batches set plus the lateness.
    const watermarks = new Map(
      (await gauge('tributary_stream_watermark_seconds')).map((v) => [JSON.stringify(v.labels), v.value]),
    );
    const freshness = await gauge('tributary_stream_freshness_seconds');
    expect(freshness.length).toBe(watermarks.size);
    for (const f of freshness) {
      const age = Date.now() / 1000 - (watermarks.get(JSON.stringify(f.labels)) as number) - LATENESS_MS / 1000;
      expect(Math.abs(f.value - age), JSON.stringify(f.labels)).toBeLessThan(5);
    }
    for (const c of await gauge('tributary_stream_last_commit_timestamp_seconds')) {
      expect(c.value * 1000).toBeGreaterThanOrEqual(started - 1000);
      expect(c.value * 1000).toBeLessThanOrEqual(Date.now());
    }

    const ref = await referenceState(await readPartitions(kafka, ns, sent), ns, features, serde);
    expect(ref.counts.invalid).toBe(bad.length);
    expect(ref.counts.late).toBeGreaterThan(10);
    expect(ref.counts.duplicate).toBeGreaterThan(10);
    const count = async (verdict: string) =>
      (await metrics.events.get()).values.filter((v) => v.labels.verdict === verdict).reduce((s, v) => s + v.value, 0);
    for (const v of ['applied', 'late', 'duplicate', 'invalid'] as const) expect(await count(v), v).toBe(ref.counts[v]);

    // Every impression's entities, read at three moments, from Valkey and from the reference: identical vectors.
    const contexts = log.filter((r) => r.record.kind === 'impression').map((r) => r.record.event as AdImpression);
    await expectSameVectors(features, contexts, online, ref.store);

    // Every entity hash carries a TTL (given with a hash's first write from a partition, not with every one).
    const hashes = (await valkey.keys(`${ns}tb:{*`)).filter((k) => !k.includes('{ckpt|') && !k.includes('{seq|'));
    expect(hashes.length).toBeGreaterThan(1000);
    const ttls = await Promise.all(hashes.map((k) => valkey.ttl(k)));
    expect(ttls.filter((t) => t <= 0)).toEqual([]);

    // A second group that writes only ClickHouse (`tributary stream --no-online`): every message once, with the
    // verdicts the first group made, its tiles counting every applied impression; it sends no dead letters.
    const dir = mkdtempSync(join(tmpdir(), 'tributary-st-'));
    const ch = await openClickHouse({ dir });
    try {
      await ensureOfflineSchema(ch);
      const second = testStream(kafka, valkey, features, ns, {
        maxBatch: 900,
        offline: new OfflineSink(ch),
        online: false,
        group: 'offline',
      });
      await second.service.start();
      await until('the offline group to process every message', () => second.service.processed >= sent);
      await second.service.stop();
      expect(second.service.processed).toBe(sent);
      const verdicts = await (
        await ch.query({
          query: `SELECT verdict, toUInt32(count()) AS n FROM (SELECT verdict FROM impressions UNION ALL SELECT verdict FROM clicks) GROUP BY verdict`,
          format: 'JSONEachRow',
        })
      ).json<{ verdict: keyof typeof ref.counts; n: number }>();
      expect(Object.fromEntries(verdicts.map((v) => [v.verdict, v.n]))).toEqual({
        applied: ref.counts.applied,
        late: ref.counts.late,
        duplicate: ref.counts.duplicate,
      });
      const series = features.groups
        .find((g) => g.group.entity.name === 'ad')
        ?.series.find((x) => x.agg.source === 'impression' && x.op.merge === 'add');
      const counted = await (
        await ch.query({
          query: `SELECT toUInt32(sum(value)) AS n FROM feature_tiles_current WHERE startsWith(entity, 'ad:') AND startsWith(field, '${series?.id}:')`,
          format: 'JSONEachRow',
        })
      ).json<{ n: number }>();
      const applied = await (
        await ch.query({
          query: `SELECT toUInt32(count()) AS n FROM impressions WHERE verdict = 'applied'`,
          format: 'JSONEachRow',
        })
      ).json<{ n: number }>();
      expect(counted[0]?.n).toBe(applied[0]?.n);
    } finally {
      await ch.close();
      rmSync(dir, { recursive: true, force: true });
    }

    // The dead-letter topic holds each rejected message once, with its reason and original bytes.
    const letters: { reason: string; value: Buffer | null }[] = [];
    const consumer = kafka.consumer({ groupId: `${ns}dlq-reader` });
    await consumer.connect();
    await consumer.subscribe({ topic: deadLetterTopic(ns), fromBeginning: true });
    const expected = ref.counts.invalid + ref.counts.late;
    await consumer.run({
      eachMessage: async ({ message }) => {
        letters.push({ reason: String(message.headers?.reason), value: message.value });
      },
    });
    await until('the dead letters', () => letters.length >= expected);
    await consumer.disconnect();
    expect(letters.length).toBe(expected);
    expect(letters.map((l) => l.reason).sort()).toEqual([...ref.reasons].sort());
    for (const b of bad) {
      const hit = letters.find((l) => l.value?.equals(b.value));
      expect(hit?.reason).toMatch(b.why);
    }
  }, 180_000);
});
