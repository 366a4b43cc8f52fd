// Each event type goes through the real Kafka broker and the real Schema Registry and comes back equal.
import { SchemaRegistryClient } from '@confluentinc/schemaregistry';
import type { Admin, Kafka } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allTopics, schemaText, topicOf } from '../../src/events/catalog.ts';
import { generate } from '../../src/events/generator.ts';
import { createRegistryClient, registerSchema, SchemaCompatibilityError } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AnyEvent, EVENT_KINDS, type EventKind, type ScoredRanking } from '../../src/events/types.ts';
import { createKafka, ensureTopics } from '../../src/kafka/client.ts';
import { KafkaLogProducer } from '../../src/kafka/event-log.ts';
import { EventPublisher } from '../../src/kafka/publish.ts';
import { endOffsets, readRange } from '../support/kafka.ts';
import { KAFKA_BROKERS, REGISTRY_URL } from '../support/services.ts';

// A namespace of this run's own: the default topics are the developer's (the README's tour reads them).
const ns = `rt${Date.now()}.`;
let kafka: Kafka;
let admin: Admin;
beforeAll(async () => {
  kafka = createKafka(KAFKA_BROKERS);
  admin = kafka.admin();
  await admin.connect();
  await ensureTopics(admin, allTopics(ns), 3);
});
afterAll(() => admin.disconnect());

const scored: ScoredRanking = {
  request_id: 'req-1',
  event_time: Date.UTC(2026, 10, 1, 12),
  scored_time: Date.UTC(2026, 10, 1, 12, 0, 0, 3),
  model_version: 'm-1',
  features_defaulted: false,
  ranked: [
    { ad_id: 'ad-2', rank: 1, pctr: 0.031, bid: 1.2, ecpm: 37.2 },
    { ad_id: 'ad-9', rank: 2, pctr: 0.05, bid: null, ecpm: null },
  ],
};

describe('events through Kafka and the Schema Registry', () => {
  it('round-trips every event type in Confluent wire format', async () => {
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    const sent: AnyEvent[] = generate({ seed: 11, days: 1, impressionsPerDay: 300, candidatesPerRequest: 4 }).map(
      (r) => r.record,
    );
    sent.push({ kind: 'scored', event: scored });
    for (const kind of EVENT_KINDS) expect(sent.some((r) => r.kind === kind)).toBe(true);

    const before = new Map<EventKind, Awaited<ReturnType<typeof endOffsets>>>();
    for (const kind of EVENT_KINDS) before.set(kind, await endOffsets(admin, topicOf(kind, ns)));
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const publisher = new EventPublisher(new KafkaLogProducer(producer), serde, ns, 100);
    for (const record of sent) await publisher.add({ record });
    await publisher.flush();
    await producer.disconnect();

    // A second process's view: a fresh client learns the schemas from the registry by id.
    const reader = new EventSerde(createRegistryClient(REGISTRY_URL));
    for (const kind of EVENT_KINDS) {
      const topic = topicOf(kind, ns);
      const raw = await readRange(kafka, topic, before.get(kind)!, await endOffsets(admin, topic));
      for (const buf of raw) expect(buf.readUInt32BE(1)).toBe(serde.schemaId(kind));
      const got = await Promise.all(raw.map((b) => reader.decode(kind, b)));
      const want = sent.filter((r) => r.kind === kind).map((r) => r.event);
      const key = (e: object) => JSON.stringify(e);
      expect(got.map(key).sort()).toEqual(want.map(key).sort());
    }
  });

  it('refuses a schema change that breaks backward compatibility, and accepts a compatible one', async () => {
    const client = createRegistryClient(REGISTRY_URL);
    await registerSchema(client, 'impression');
    const base = JSON.parse(schemaText('impression'));
    const breaking = JSON.stringify({ ...base, fields: [...base.fields, { name: 'country', type: 'string' }] });
    await expect(registerSchema(client, 'impression', breaking)).rejects.toBeInstanceOf(SchemaCompatibilityError);

    // The server enforces it too, not only our local pre-check: register directly, bypassing it.
    const subject = `compat-test-${Date.now()}-value`;
    const raw = new SchemaRegistryClient({ baseURLs: [REGISTRY_URL] });
    await raw.updateConfig(subject, { compatibility: 'BACKWARD' as never });
    await raw.register(subject, { schemaType: 'AVRO', schema: schemaText('impression') }, false);
    const refused = await raw.register(subject, { schemaType: 'AVRO', schema: breaking }, false).then(
      () => 0,
      (e: { status?: number }) => e.status,
    );
    expect(refused).toBe(409);
    const compatible = JSON.stringify({
      ...base,
      fields: [...base.fields, { name: 'country', type: ['null', 'string'], default: null }],
    });
    expect(await raw.register(subject, { schemaType: 'AVRO', schema: compatible }, false)).toBeGreaterThan(0);
  });
});
