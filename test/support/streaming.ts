// Shared by the streaming tests: publish a generated log (plus deliberately bad messages) under a namespace,
// and compute the reference state by replaying the topics through the engine in process.
import type { Cluster, Redis, Valkey } from 'iovalkey';
import type { Kafka } from 'kafkajs';
import pino from 'pino';
import { expect } from 'vitest';
import { allTopics, deadLetterTopic, topicOf } from '../../src/events/catalog.ts';
import { type GeneratorOptions, generate } from '../../src/events/generator.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import type { AdImpression } from '../../src/events/types.ts';
import { frame } from '../../src/events/wire.ts';
import { Admission } from '../../src/features/admission.ts';
import type { FeatureSet } from '../../src/features/compile.ts';
import type { Source } from '../../src/features/define.ts';
import type { ReadRequest, ReadResult } from '../../src/features/read-plan.ts';
import { ensureTopics } from '../../src/kafka/client.ts';
import { KafkaEventLog } from '../../src/kafka/event-log.ts';
import { EventPublisher } from '../../src/kafka/publish.ts';
import type { FeatureReader } from '../../src/online/contract.ts';
import { MemoryStore } from '../../src/online/memory-store.ts';
import { ValkeyStore } from '../../src/online/valkey-store.ts';
import { ValkeyCheckpoints } from '../../src/streams/checkpoint.ts';
import type { EventLog, OutMessage } from '../../src/streams/event-log.ts';
import { StreamMetrics } from '../../src/streams/metrics.ts';
import { caughtUp as caughtUpTo } from '../../src/streams/open.ts';
import { type LogMessage, processBatch, sourceTopics } from '../../src/streams/processor.ts';
import { type OfflineWriter, StreamService } from '../../src/streams/service.ts';
import { KAFKA_BROKERS, REGISTRY_URL } from './services.ts';

export const LATENESS_MS = 3600_000;

/**
 * The namespace's topics, its dead-letter topic taking at most `maxBytes` per request (its max.message.bytes), so a
 * batch's dead letters must be split and the largest cut to fit.
 */
export async function topicsWithSmallDeadLetters(kafka: Kafka, namespace: string, maxBytes: number): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await ensureTopics(admin, allTopics(namespace), 3, {
      configs: { [deadLetterTopic(namespace)]: { 'max.message.bytes': String(maxBytes) } },
    });
  } finally {
    await admin.disconnect();
  }
}

/** Kafka (on the test servers) or the file log, as the event log the helpers publish to and read from. */
export function asEventLog(log: Kafka | EventLog): EventLog {
  return 'where' in log ? log : new KafkaEventLog(log, KAFKA_BROKERS);
}

/**
 * Publishes the log and five bad messages; returns the log and how many messages are sent per topic in all.
 * With `holdBack`, that share of the log (its end) is published only when the test calls `publishRest()`: at once,
 * or in `rounds` sends `pauseMs` apart (production that lasts), calling `onRound` after each with the count of held
 * back events published so far (`held` in all). Topics have `partitions` partitions (when this creates them).
 */
export async function publishScenario(
  target: Kafka | EventLog,
  serde: EventSerde,
  namespace: string,
  gen: Partial<GeneratorOptions>,
  { holdBack = 0, partitions = 3 }: { holdBack?: number; partitions?: number } = {},
) {
  const eventLog = asEventLog(target);
  await eventLog.ensureTopics(allTopics(namespace), partitions);
  const log = generate(gen);
  const split = Math.round(log.length * (1 - holdBack));
  const publish = async (
    records: typeof log,
    extra: { topic: string; messages: OutMessage[] }[] = [],
    { rounds = 1, pauseMs = 0, onRound }: Rounds = {},
  ) => {
    const producer = eventLog.producer();
    await producer.connect();
    const publisher = new EventPublisher(producer, serde, namespace);
    const per = Math.ceil(records.length / rounds);
    for (let round = 0; round < rounds; round++) {
      if (round > 0 && pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
      for (const r of records.slice(round * per, (round + 1) * per)) await publisher.add(r);
      await publisher.flush();
      onRound?.(round + 1, Math.min(records.length, (round + 1) * per));
    }
    if (extra.length) await producer.send(extra);
    await producer.disconnect();
  };
  const imp = log.find((r) => r.record.kind === 'impression')?.record.event as unknown as Record<string, number>;
  const bad = [
    { value: Buffer.from('definitely not avro'), why: /shorter than|magic byte/ },
    { value: frame(987_654, Buffer.from([2, 97])), why: /unknown schema id 987654/ },
    {
      value: serde.encode('click', { ...imp, impression_id: 'x', impression_time: imp.event_time } as never),
      why: /wrong schema/,
    },
    {
      value: serde.encode('impression', { ...imp, event_id: 'bad-future', event_time: Date.now() + 9e9 } as never),
      why: /future/,
    },
    { value: serde.encode('impression', { ...imp, event_id: 'bad-empty', ad_id: '' } as never), why: /ad_id is empty/ },
  ];
  await publish(log.slice(0, split), [
    { topic: topicOf('impression', namespace), messages: bad.map((b) => ({ key: 'bad', value: b.value })) },
  ]);
  const sent = log.filter((r) => r.record.kind === 'impression' || r.record.kind === 'click').length + bad.length;
  return {
    log,
    bad,
    sent,
    held: log.length - split,
    publishRest: (rounds?: Rounds) => publish(log.slice(split), [], rounds),
  };
}

interface Rounds {
  rounds?: number;
  pauseMs?: number;
  onRound?: (round: number, published: number) => void;
}

export interface ReadBack {
  topic: string;
  partition: number;
  messages: LogMessage[];
}

/** Every message of the source topics, per partition in offset order. */
export async function readPartitions(log: Kafka | EventLog, namespace: string, expected: number): Promise<ReadBack[]> {
  const parts = new Map<string, ReadBack>();
  let n = 0;
  const consumer = asEventLog(log).consumer(`${namespace}reader-${Math.random()}`);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${n} of ${expected}`)), 60_000);
    consumer
      .start(
        [topicOf('impression', namespace), topicOf('click', namespace)],
        async ({ batch, resolveOffset }) => {
          const id = `${batch.topic}/${batch.partition}`;
          const p = parts.get(id) ?? { topic: batch.topic, partition: batch.partition, messages: [] };
          parts.set(id, p);
          p.messages.push(...batch.messages);
          resolveOffset(batch.lastOffset());
          n += batch.messages.length;
          if (n >= expected) {
            clearTimeout(timer);
            resolve();
          }
        },
        () => {},
      )
      .catch(reject);
  });
  await consumer.disconnect();
  return [...parts.values()];
}

/** The uninterrupted, in-process run: each partition through the engine in offset order. */
export async function referenceState(parts: ReadBack[], namespace: string, features: FeatureSet, serde: EventSerde) {
  const store = new MemoryStore(features);
  const counts = { applied: 0, late: 0, duplicate: 0, invalid: 0 };
  const reasons: string[] = [];
  for (const p of parts) {
    const source: Source = p.topic === topicOf('impression', namespace) ? 'impression' : 'click';
    const out = await processBatch(
      source,
      p.topic,
      p.partition,
      0,
      p.messages,
      features,
      serde,
      new Admission(LATENESS_MS),
    );
    await store.applyBatch(out.admitted, `${p.topic}/${p.partition}`, out.lastOffset);
    for (const k of Object.keys(counts) as (keyof typeof counts)[]) counts[k] += out.counts[k];
    reasons.push(...out.deadLetters.map((d) => d.reason));
  }
  return { store, counts, reasons };
}

export async function until(what: string, done: () => boolean | Promise<boolean>, ms = 90_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** True once every source partition's checkpoint (in Valkey, group `groupId`) has reached the end of the log. */
export function caughtUp(kafka: Kafka, valkey: Redis | Cluster, namespace: string, groupId: string): Promise<boolean> {
  return caughtUpTo(asEventLog(kafka), new ValkeyCheckpoints(valkey, groupId), Object.values(sourceTopics(namespace)));
}

/** Reads every impression's vector at a few moments from both stores; they must be identical. */
export async function expectSameVectors(
  features: FeatureSet,
  contexts: AdImpression[],
  online: FeatureReader,
  reference: { readSync(requests: readonly ReadRequest[]): ReadResult[] },
): Promise<void> {
  const end = Math.max(...contexts.map((c) => c.event_time));
  for (const t of [end - 6 * 3600_000, end - 3600_000 + 123, end + 1]) {
    const plan = features.plan(contexts, t);
    const fromOnline = features.assemble(plan, await online.read(plan.requests));
    const fromReference = features.assemble(plan, reference.readSync(plan.requests));
    expect(fromOnline).toEqual(fromReference);
    expect(fromOnline.some((v) => v.some((x, i) => x !== features.features[i]?.default))).toBe(true);
  }
}

/** A stream service on real Kafka/Valkey under `namespace` (group `<namespace>stream`), as the tests run it. */
export function testStream(
  kafka: Kafka | EventLog,
  valkey: Valkey | Cluster,
  features: FeatureSet,
  namespace: string,
  o: {
    maxBatch: number;
    metrics?: StreamMetrics;
    offline?: OfflineWriter;
    recordServed?: boolean;
    logLevel?: string;
    /** false: a group that writes only the offline store (and sends no dead letters), under group `group`. */
    online?: false;
    group?: string;
    /** The stream's --max-clock-skew (default: the stream's). */
    maxClockSkewMs?: number;
  },
) {
  const online = new ValkeyStore(valkey, {
    features,
    namespace,
    ttlSeconds: 8 * 86400,
    retentionMs: features.retentionMs,
  });
  const metrics = o.metrics ?? new StreamMetrics();
  const service = new StreamService(
    {
      eventLog: asEventLog(kafka),
      serde: new EventSerde(createRegistryClient(REGISTRY_URL)),
      features,
      online: o.online === false ? undefined : online,
      offline: o.offline,
      served: o.recordServed ? online : undefined,
      checkpoints: new ValkeyCheckpoints(valkey, `${namespace}${o.group ?? 'stream'}`),
      metrics,
      log: pino({ level: process.env.TEST_STREAM_LOG ?? o.logLevel ?? 'warn' }),
    },
    {
      namespace,
      groupId: `${namespace}${o.group ?? 'stream'}`,
      allowedLatenessMs: LATENESS_MS,
      maxClockSkewMs: o.maxClockSkewMs,
      maxBatch: o.maxBatch,
      sendDeadLetters: o.online !== false,
    },
  );
  return { service, online, metrics };
}
