// `--source kafka` on real Kafka + Schema Registry: a generated log published to one partition per topic replays
// into exactly the rows the event-file backfill writes, and records that cannot be decoded are counted, not fatal.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KafkaSource } from '../../src/backfill/kafka-source.ts';
import { runBackfill } from '../../src/backfill/run.ts';
import { fromEventFile } from '../../src/backfill/sources.ts';
import { topicOf } from '../../src/events/catalog.ts';
import { writeEventFile } from '../../src/events/event-file.ts';
import { generate } from '../../src/events/generator.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { EVENT_KINDS } from '../../src/events/types.ts';
import { frame } from '../../src/events/wire.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka, ensureTopics } from '../../src/kafka/client.ts';
import { KafkaLogProducer } from '../../src/kafka/event-log.ts';
import { EventPublisher } from '../../src/kafka/publish.ts';
import { KAFKA_BROKERS, REGISTRY_URL } from '../support/services.ts';

const HOUR = 3600_000;
const features = new FeatureSet(DEFAULT_GROUPS);

describe('backfill --source kafka', () => {
  it('replays a one-partition log into exactly the rows of the event-file backfill', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'backfill-kafka-'));
    const ns = `bfk${Date.now()}.`;
    const kafka = createKafka(KAFKA_BROKERS);
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    const log = generate({ seed: 31, days: 1, impressionsPerDay: 8000, lateShare: 0.03, duplicateShare: 0.02 });
    const file = join(dir, 'events.ndjson');
    await writeEventFile(file, log);

    const admin = kafka.admin();
    await admin.connect();
    await ensureTopics(admin, [topicOf('impression', ns), topicOf('click', ns)], 1);
    await admin.disconnect();
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const publisher = new EventPublisher(new KafkaLogProducer(producer), serde, ns);
    for (const r of log) await publisher.add(r);
    await publisher.flush();
    // Bytes nobody can decode, amid the log (timestamps inside its range): skipped, counted, the replay goes on.
    const midway = String(log[Math.floor(log.length / 2)]?.ingestTime);
    await producer.send({
      topic: topicOf('impression', ns),
      messages: [
        { value: Buffer.from('not avro at all'), timestamp: midway },
        { value: frame(987_654, Buffer.from([2, 97])), timestamp: midway },
      ],
    });
    await producer.send({ topic: topicOf('click', ns), messages: [{ value: Buffer.from([0]), timestamp: midway }] });
    await producer.disconnect();

    const common = { features, sourceName: 'log', attributionMs: HOUR, allowedLatenessMs: HOUR };
    const fromFile = join(dir, 'file.csv');
    const fromKafka = join(dir, 'kafka.csv');
    const source = new KafkaSource({ kafka, brokers: KAFKA_BROKERS, serde, namespace: ns, readAhead: 500 });
    const t0 = performance.now();
    const meta = await runBackfill({ ...common, open: () => source.open(), out: fromKafka });
    const seconds = (performance.now() - t0) / 1000;
    await runBackfill({ ...common, open: () => fromEventFile(file), out: fromFile });

    const sent = log.filter((r) => r.record.kind === 'impression' || r.record.kind === 'click').length;
    console.log(`kafka source: ${sent} events (2 passes) in ${seconds.toFixed(1)}s, ${meta.rows} rows`);
    expect(source.read).toBe(sent + 3);
    const bad = source.bad.map((b) => `${b.topic}: ${b.reason}`).sort();
    expect(bad).toEqual([
      expect.stringMatching(new RegExp(`^${topicOf('click', ns)}: (message shorter|unknown magic byte)`)),
      expect.stringMatching(new RegExp(`^${topicOf('impression', ns)}: (message shorter|unknown magic byte)`)),
      `${topicOf('impression', ns)}: unknown schema id 987654`,
    ]);
    expect(meta.rows).toBeGreaterThan(6000);
    expect(readFileSync(fromKafka, 'utf8')).toBe(readFileSync(fromFile, 'utf8'));
  }, 180_000);
});
