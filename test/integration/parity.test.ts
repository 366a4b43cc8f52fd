// The headline promise on real servers: stream a generated log with late, out-of-order and duplicate events
// through Kafka into Valkey and ClickHouse, recording what the online store served; then the served vectors, the
// backfill's replay and an independent SQL query agree for every impression and every feature.
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Valkey } from 'iovalkey';
import { afterAll, describe, expect, it } from 'vitest';
import { checkParity } from '../../src/backfill/parity.ts';
import { allTopics } from '../../src/events/catalog.ts';
import { loadMapping } from '../../src/events/mapping.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { readRows } from '../../src/events/rows.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AnyEvent, EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka, ensureTopics } from '../../src/kafka/client.ts';
import { KafkaLogProducer } from '../../src/kafka/event-log.ts';
import { EventPublisher } from '../../src/kafka/publish.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import { ensureOfflineSchema } from '../../src/offline/schema.ts';
import { OfflineSink } from '../../src/offline/sink.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import { caughtUp, LATENESS_MS, publishScenario, testStream, until } from '../support/streaming.ts';

const kafka = createKafka(KAFKA_BROKERS);
const valkey = new Valkey(VALKEY_URL, { enableAutoPipelining: true });
const features = new FeatureSet(DEFAULT_GROUPS);
afterAll(() => valkey.disconnect());

// CI runs a 50k-event stream; PARITY_IMPRESSIONS_PER_DAY=97000 gives the 200k (minutes: see the notes).
const PER_DAY = Number(process.env.PARITY_IMPRESSIONS_PER_DAY ?? 24_000);
const SAMPLE = join(import.meta.dirname, '../../../shared/data/talkingdata_train_sample.csv');

/** Streams namespace `ns` with served-vector recording into a fresh embedded ClickHouse, then checks parity. */
async function streamAndCheck(ns: string) {
  const ch = await openClickHouse({ dir: mkdtempSync(join(tmpdir(), 'parity-ch-')) });
  await ensureOfflineSchema(ch);
  const { service } = testStream(kafka, valkey, features, ns, {
    maxBatch: 2000,
    offline: new OfflineSink(ch),
    recordServed: true,
  });
  await service.start();
  await until('the stream to finish', () => caughtUp(kafka, valkey, ns, `${ns}stream`), 400_000);
  await service.stop();
  const report = await checkParity(ch, features, DEFAULT_GROUPS, LATENESS_MS);
  await ch.close();
  const bad = report.features.filter((f) => f.servedMismatches || f.sqlMismatches);
  expect(bad, JSON.stringify(bad.slice(0, 5))).toEqual([]);
  expect(report.missingServed).toBe(0);
  expect(report.missingSql).toBe(0);
  return report;
}

async function preparedSerde() {
  const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
  await serde.prepare(EVENT_KINDS);
  return serde;
}

describe('parity: served == backfill == SQL', () => {
  it('holds for every impression and feature of a stream with late, out-of-order and duplicate events', async () => {
    const ns = `par${Date.now()}.`;
    const serde = await preparedSerde();
    const { sent } = await publishScenario(kafka, serde, ns, {
      seed: 77,
      days: 2,
      impressionsPerDay: PER_DAY,
      lateShare: 0.03,
      duplicateShare: 0.02,
    });
    expect(sent).toBeGreaterThanOrEqual(PER_DAY * 2);
    const report = await streamAndCheck(ns);
    expect(report.impressions).toBeGreaterThan(PER_DAY * 1.8);
  }, 900_000);

  // Traffic nobody here shaped. The file is not in time order; it is published in click_time order (as a log
  // would be), each attributed row's click right after its impression.
  it.skipIf(!existsSync(SAMPLE))(
    'holds over the TalkingData sample',
    async () => {
      const ns = `td${Date.now()}.`;
      const serde = await preparedSerde();
      const rows: { t: number; events: AnyEvent[] }[] = [];
      for await (const r of readRows(SAMPLE, loadMapping('talkingdata'))) {
        if ('error' in r) throw new Error(`line ${r.line}: ${r.error}`);
        rows.push({ t: r.events[0]?.event.event_time as number, events: r.events });
      }
      rows.sort((a, b) => a.t - b.t);
      const admin = kafka.admin();
      await admin.connect();
      await ensureTopics(admin, allTopics(ns), 3);
      await admin.disconnect();
      const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      const publisher = new EventPublisher(new KafkaLogProducer(producer), serde, ns);
      for (const r of rows) for (const record of r.events) await publisher.add({ record });
      await publisher.flush();
      await producer.disconnect();
      const report = await streamAndCheck(ns);
      expect(report.impressions).toBeGreaterThan(90_000);
    },
    900_000,
  );

  it.runIf(!existsSync(SAMPLE))(
    'skips the TalkingData parity: ../shared/data/talkingdata_train_sample.csv is absent',
    () => {},
  );
});
