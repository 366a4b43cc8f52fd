// The stream service on real Kafka, Schema Registry and Valkey: the online state equals an in-process replay of
// the same topics, bad and late events land in the dead-letter topic with reasons, and nothing else is lost.
import { Valkey } from 'iovalkey';
import { afterAll, describe, expect, it } from 'vitest';
import { deadLetterTopic } from '../../src/events/catalog.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AdImpression, EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import {
  expectSameVectors,
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
    await service.start();
    await until('the stream to process every message', () => service.processed >= sent);
    await service.stop();
    expect(service.processed).toBe(sent);

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
