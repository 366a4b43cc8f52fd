// Hostile input, generated: message bytes and sizes (junk, truncated Avro, unknown schema ids, the wrong schema,
// absurd fields, records larger than the dead-letter topic takes), batch compositions (partitions, batch sizes) and
// event times (late, duplicate, ahead of their log timestamp) against a real stream on the real servers. For every
// case: the stream finishes; every message is applied, counted as a duplicate, or dead-lettered exactly once with the
// reason the engine gives; and the online state equals the engine's in-process replay of the same log.
// CI runs a few seeded cases; the long run:  RUNS=200 npm run test:hostile  (HOSTILE_SEED and HOSTILE_PATH, as a
// failure prints them, replay one case).

import fc from 'fast-check';
import { Valkey } from 'iovalkey';
import { afterAll, describe, expect, it } from 'vitest';
import { deadLetterTopic, topicOf } from '../../src/events/catalog.ts';
import { generate } from '../../src/events/generator.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AdClick, type AdImpression, EVENT_KINDS } from '../../src/events/types.ts';
import { frame } from '../../src/events/wire.ts';
import { Admission } from '../../src/features/admission.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { MemoryStore } from '../../src/online/memory-store.ts';
import { type LogMessage, processBatch } from '../../src/streams/processor.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import {
  caughtUp,
  LATENESS_MS,
  readPartitions,
  testStream,
  topicsWithSmallDeadLetters,
  until,
} from '../support/streaming.ts';

const RUNS = Number(process.env.HOSTILE_RUNS ?? 4);
const SEED = Number(process.env.HOSTILE_SEED ?? 1405);
/** The dead-letter topic's max.message.bytes in every case: large junk must be split and cut to fit. */
const DEAD_LETTER_LIMIT = 150_000;

const kafka = createKafka(KAFKA_BROKERS);
const valkey = new Valkey(VALKEY_URL, { enableAutoPipelining: true });
const features = new FeatureSet(DEFAULT_GROUPS);
afterAll(() => valkey.disconnect());
const stamp = Date.now();
const BASE = Date.UTC(2026, 10, 2);
const MIN = 60_000;
const HOUR = 60 * MIN;
/** The stream's default --max-clock-skew, as documented (a literal: the oracle does not borrow the engine's). */
const MAX_CLOCK_SKEW_MS = 10 * MIN;

// A small pool of real-looking events: few users, ads and ids, so state and duplicates overlap.
const pool = generate({ seed: 3, days: 1, impressionsPerDay: 300 });
const IMPRESSIONS = pool.filter((r) => r.record.kind === 'impression').map((r) => r.record.event as AdImpression);
const CLICKS = pool.filter((r) => r.record.kind === 'click').map((r) => r.record.event as AdClick);

type Body =
  | { kind: 'event'; click: boolean; pick: number; id: number; skew: number }
  | { kind: 'junk'; size: number; fill: number }
  | { kind: 'unknown-id'; id: number; size: number }
  | { kind: 'truncated'; pick: number; cut: number }
  | { kind: 'absurd'; pick: number; how: 'empty-ad' | 'negative-bid' | 'ancient' | 'click-first' };

interface Input {
  topic: 'impression' | 'click';
  partition: number;
  /** Minutes since the previous message's log timestamp. */
  gap: number;
  body: Body;
}

const skew = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: -3 * HOUR, max: 0 }) }, // on time, or late past the 1 h lateness
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 9 * MIN }) }, // ahead, within the clock skew allowed
  { weight: 1, arbitrary: fc.integer({ min: 11 * MIN, max: 30 * HOUR }) }, // from a skewed clock
);
const body: fc.Arbitrary<Body> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      kind: fc.constant('event' as const),
      click: fc.boolean(),
      pick: fc.nat(),
      id: fc.nat({ max: 40 }), // a small id space: duplicates happen
      skew,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('junk' as const),
      size: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 100_000, max: 400_000 })),
      fill: fc.nat({ max: 255 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('unknown-id' as const),
      id: fc.integer({ min: 500_000, max: 2 ** 31 - 1 }),
      size: fc.nat({ max: 50 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncated' as const), pick: fc.nat(), cut: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('absurd' as const),
      pick: fc.nat(),
      how: fc.constantFrom('empty-ad' as const, 'negative-bid' as const, 'ancient' as const, 'click-first' as const),
    }),
  },
);
const input: fc.Arbitrary<Input> = fc.record({
  topic: fc.constantFrom('impression' as const, 'click' as const),
  partition: fc.integer({ min: 0, max: 2 }),
  gap: fc.integer({ min: 0, max: 20 }),
  body,
});
const scenario = fc.record({
  inputs: fc.array(input, { minLength: 1, maxLength: 120, size: 'medium' }),
  maxBatch: fc.integer({ min: 1, max: 200 }),
});

/** The message bytes of one input, and its log timestamp. */
function encode(serde: EventSerde, b: Body, at: number): Buffer {
  const imp = (pick: number) => IMPRESSIONS[pick % IMPRESSIONS.length] as AdImpression;
  const clk = (pick: number) => CLICKS[pick % CLICKS.length] as AdClick;
  switch (b.kind) {
    case 'event': {
      const t = at + b.skew;
      if (b.click) {
        const c = clk(b.pick);
        return serde.encode('click', { ...c, event_id: `c${b.id}`, event_time: t, impression_time: t - 30_000 });
      }
      return serde.encode('impression', { ...imp(b.pick), event_id: `i${b.id}`, event_time: t });
    }
    case 'junk':
      return Buffer.alloc(b.size, b.fill);
    case 'unknown-id':
      return frame(b.id, Buffer.alloc(b.size, 7));
    case 'truncated': {
      const whole = serde.encode('impression', { ...imp(b.pick), event_id: 'cut', event_time: at });
      return whole.subarray(0, 5 + (b.cut % (whole.length - 5)));
    }
    case 'absurd': {
      const e = { ...imp(b.pick), event_id: 'absurd', event_time: at };
      if (b.how === 'empty-ad') return serde.encode('impression', { ...e, ad_id: '' });
      if (b.how === 'negative-bid') return serde.encode('impression', { ...e, bid: -1 });
      if (b.how === 'ancient') return serde.encode('impression', { ...e, event_time: Date.UTC(1999, 0, 1) });
      return serde.encode('click', { ...clk(b.pick), event_id: 'absurd', event_time: at, impression_time: at + 1 });
    }
  }
}

let cases = 0;

async function check(serde: EventSerde, inputs: Input[], maxBatch: number): Promise<void> {
  const ns = `hx${stamp}-${cases++}.`;
  await topicsWithSmallDeadLetters(kafka, ns, DEAD_LETTER_LIMIT);

  const producer = kafka.producer();
  await producer.connect();
  let at = BASE;
  // Events from a skewed clock, by where they land: whatever else happens, each must be dead-lettered as such.
  const offsets = new Map<string, number>();
  const skewed: string[] = [];
  for (const i of inputs) {
    at += i.gap * MIN;
    const value = encode(serde, i.body, at);
    const topic = topicOf(i.topic, ns);
    const offset = offsets.get(`${topic}/${i.partition}`) ?? 0;
    offsets.set(`${topic}/${i.partition}`, offset + 1);
    const b = i.body;
    if (b.kind === 'event' && b.click === (i.topic === 'click') && b.skew > MAX_CLOCK_SKEW_MS)
      skewed.push(`${topic}/${i.partition}/${offset}`);
    await producer.send({ topic, messages: [{ key: null, value, partition: i.partition, timestamp: String(at) }] });
  }
  await producer.disconnect();

  const { service, online, metrics } = testStream(kafka, valkey, features, ns, { maxBatch, logLevel: 'silent' });
  await service.start();
  try {
    await until(
      `the stream to finish ${inputs.length} messages`,
      () => caughtUp(kafka, valkey, ns, `${ns}stream`),
      60_000,
    );
  } finally {
    await service.stop();
  }

  // The engine's replay of the same log, partition by partition in offset order.
  const reference = new MemoryStore(features);
  const counts = { applied: 0, late: 0, duplicate: 0, invalid: 0 };
  const letters = new Map<string, string>();
  for (const p of await readPartitions(kafka, ns, inputs.length)) {
    const source = p.topic === topicOf('impression', ns) ? 'impression' : 'click';
    const out = await processBatch(
      source,
      p.topic,
      p.partition,
      0,
      p.messages as LogMessage[],
      features,
      serde,
      new Admission(LATENESS_MS),
    );
    await reference.applyBatch(out.admitted, `${p.topic}/${p.partition}`, out.lastOffset);
    for (const k of Object.keys(counts) as (keyof typeof counts)[]) counts[k] += out.counts[k];
    for (const d of out.deadLetters) letters.set(`${p.topic}/${p.partition}/${d.coordinates.offset}`, d.reason);
  }
  expect(service.processed).toBe(inputs.length);
  const verdicts = { applied: 0, late: 0, duplicate: 0, invalid: 0 };
  for (const v of (await metrics.events.get()).values) verdicts[v.labels.verdict as keyof typeof verdicts] += v.value;
  expect(verdicts).toEqual(counts);

  // Dead letters: exactly the engine's, each once, with its reason.
  const ends = await withDeadLetterOffsets(ns);
  expect(ends).toBe(letters.size);
  const got = new Map<string, string>();
  if (letters.size > 0) {
    const consumer = kafka.consumer({ groupId: `${ns}reader` });
    await consumer.connect();
    await consumer.subscribe({ topic: deadLetterTopic(ns), fromBeginning: true });
    let n = 0;
    await consumer.run({
      eachMessage: async ({ message }) => {
        const h = (k: string) => String(message.headers?.[k] ?? '');
        const key = `${h('source_topic')}/${h('source_partition')}/${h('source_offset')}`;
        expect(got.has(key), `dead-lettered twice: ${key}`).toBe(false);
        got.set(key, h('reason'));
        n++;
      },
    });
    await until('the dead letters', () => n >= letters.size, 30_000);
    await consumer.disconnect();
  }
  expect(got).toEqual(letters);
  for (const key of skewed) expect(got.get(key), key).toMatch(/in the future/);

  // The online state: every entity the log touches, read at moments across it, equals the replay's.
  const contexts = IMPRESSIONS.slice(0, 120);
  for (const t of [BASE + HOUR, at - 2 * HOUR, at, at + 30 * HOUR]) {
    const plan = features.plan(contexts, t);
    expect(features.assemble(plan, await online.read(plan.requests))).toEqual(
      features.assemble(plan, reference.readSync(plan.requests)),
    );
  }
}

/** How many messages the namespace's dead-letter topic holds. */
async function withDeadLetterOffsets(ns: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(deadLetterTopic(ns));
    return offsets.reduce((s, o) => s + Number(o.high) - Number(o.low), 0);
  } finally {
    await admin.disconnect();
  }
}

describe('hostile input against a real stream', () => {
  it(`${RUNS} generated logs: each finishes, each message accounted once, state equals the replay`, async () => {
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    await fc.assert(
      fc.asyncProperty(scenario, ({ inputs, maxBatch }) => check(serde, inputs, maxBatch)),
      { numRuns: RUNS, seed: SEED, path: process.env.HOSTILE_PATH, endOnFailure: true },
    );
  }, 3_600_000);
});
