// The headline promise on real servers: stream a generated log with late, out-of-order and duplicate events
// through Kafka into Valkey and ClickHouse, recording what the online store served; then the served vectors, the
// backfill's replay and an independent SQL query agree for every impression and every feature.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Valkey } from 'iovalkey';
import { afterAll, describe, expect, it } from 'vitest';
import { checkParity } from '../../src/backfill/parity.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import { ensureOfflineSchema } from '../../src/offline/schema.ts';
import { OfflineSink } from '../../src/offline/sink.ts';
import { cliWithServers, KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import { caughtUp, LATENESS_MS, publishScenario, testStream, until } from '../support/streaming.ts';
import { skipWithoutTalkingData, TALKINGDATA_SAMPLE } from '../support/talkingdata.ts';

const kafka = createKafka(KAFKA_BROKERS);
const valkey = new Valkey(VALKEY_URL, { enableAutoPipelining: true });
const features = new FeatureSet(DEFAULT_GROUPS);
afterAll(() => valkey.disconnect());

// The issue's ≥ 200k events (≈ 4 minutes here); PARITY_IMPRESSIONS_PER_DAY=24000 gives a 50k-event run for iterating.
const PER_DAY = Number(process.env.PARITY_IMPRESSIONS_PER_DAY ?? 97_000);

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

  // Traffic nobody here shaped, published by `tributary produce` itself: the file is not in time order, so
  // --sort-by-time publishes its events in event-time order (each click at its own attributed time), as a log
  // receiving them live would hold them.
  it('holds over the TalkingData sample', async (ctx) => {
    skipWithoutTalkingData(ctx);
    const ns = `td${Date.now()}.`;
    const { stdout } = await cliWithServers(
      '--namespace',
      ns,
      '--partitions',
      '3',
      'produce',
      '--file',
      TALKINGDATA_SAMPLE,
      '--mapping',
      'talkingdata',
      '--sort-by-time',
    );
    expect(JSON.parse(stdout)).toEqual({ rows: 100_000, published: 100_227, bad_rows: 0 });
    const report = await streamAndCheck(ns);
    expect(report.impressions).toBeGreaterThan(90_000);
  }, 900_000);
});
