// The embedded default runs the same stream service: one generated scenario, published to real Kafka (streamed into
// Valkey) and to the file log (streamed into the in-process store), ends in the same online features, the same
// verdicts and the same offline rows; a restart of the embedded stream (stop/start, or a new process) changes nothing.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { Valkey } from 'iovalkey';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AdImpression, EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { FileEventLog } from '../../src/log/file-event-log.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import { ensureOfflineSchema } from '../../src/offline/schema.ts';
import { OfflineSink } from '../../src/offline/sink.ts';
import type { MemoryStore } from '../../src/online/memory-store.ts';
import type { StreamMetrics } from '../../src/streams/metrics.ts';
import { openSerde, openStream } from '../../src/streams/open.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import { caughtUp, expectSameVectors, LATENESS_MS, publishScenario, testStream, until } from '../support/streaming.ts';

const ns = `emb${Date.now()}.`;
const kafka = createKafka(KAFKA_BROKERS);
const valkey = new Valkey(VALKEY_URL, { enableAutoPipelining: true });
const features = new FeatureSet(DEFAULT_GROUPS);
const dir = mkdtempSync(join(tmpdir(), 'tributary-embedded-'));
const config = loadConfig({ logDir: join(dir, 'log'), namespace: ns, partitions: 3 }, {});
const scenario = { seed: 33, days: 1, impressionsPerDay: 3500, lateShare: 0.04, duplicateShare: 0.03 };
const clients: ClickHouseClient[] = [];
afterAll(async () => {
  valkey.disconnect();
  for (const c of clients) await c.close();
});

async function offline(database: string): Promise<ClickHouseClient> {
  const ch = await openClickHouse({ dir: join(dir, 'clickhouse'), database });
  clients.push(ch);
  await ensureOfflineSchema(ch);
  return ch;
}

/** What the stream wrote offline, without the batch order (batches differ from run to run, rows must not). */
async function offlineRows(ch: ClickHouseClient) {
  const q = async (query: string) => (await ch.query({ query, format: 'JSONEachRow' })).json();
  const coordinates = 'topic, partition, offset, ingest_time, verdict, event_id, event_time';
  return {
    impressions: await q(
      `SELECT ${coordinates}, ad_id, user_id FROM impressions FINAL ORDER BY topic, partition, offset`,
    ),
    clicks: await q(`SELECT ${coordinates}, impression_id FROM clicks FINAL ORDER BY topic, partition, offset`),
    tiles: await q('SELECT entity, field, op, value FROM feature_tiles_current ORDER BY entity, field, op'),
  };
}

async function verdicts(metrics: StreamMetrics) {
  const counts: Record<string, number> = {};
  for (const v of (await metrics.events.get()).values) {
    counts[v.labels.verdict as string] = (counts[v.labels.verdict as string] ?? 0) + v.value;
  }
  return counts;
}

describe('tributary stream, embedded', () => {
  it('matches Kafka + Valkey on the same scenario, and survives restarts', async () => {
    // Kafka + Schema Registry + Valkey.
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    // Published in two halves to both logs (the same order of messages in each partition): the embedded stream is
    // stopped between them.
    const half = { holdBack: 0.5 };
    const kafkaLog = await publishScenario(kafka, serde, ns, scenario, half);
    await kafkaLog.publishRest();
    const { log, sent } = kafkaLog;
    const servers = testStream(kafka, valkey, features, ns, {
      maxBatch: 700,
      offline: new OfflineSink(await offline('servers')),
    });
    await servers.service.start();
    await until('the Kafka stream', () => caughtUp(kafka, valkey, ns, `${ns}stream`));
    await servers.service.stop();

    // The file log + in-memory registry + in-process store, as `tributary stream` wires it with no servers.
    const fileLog = new FileEventLog(config.logDir);
    const fileHalf = await publishScenario(fileLog, await openSerde(config), ns, scenario, half);
    expect(fileHalf.sent).toBe(sent);
    const chFile = await offline('embedded');
    const open = () =>
      openStream(config, {
        features,
        group: 'stream',
        allowedLatenessMs: LATENESS_MS,
        maxBatch: 500,
        offline: chFile,
        log: pino({ level: 'warn' }),
      });
    const embedded = await open();
    // Stop after the first half and start again in the same process: it resumes from its checkpoints.
    await embedded.service.start();
    await until('half the file log', () => embedded.caughtUp());
    await embedded.service.stop();
    expect(embedded.service.processed).toBeLessThan(sent);
    await fileHalf.publishRest();
    await embedded.service.start();
    await until('the embedded stream', () => embedded.caughtUp());
    await embedded.close();
    expect(embedded.service.processed).toBe(sent);

    const contexts = log.filter((r) => r.record.kind === 'impression').map((r) => r.record.event as AdImpression);
    await expectSameVectors(features, contexts, servers.online, embedded.online as MemoryStore);
    const counts = await verdicts(embedded.metrics);
    expect(counts).toEqual(await verdicts(servers.metrics));
    expect(counts.late).toBeGreaterThan(10);
    expect(counts.invalid).toBe(5);
    const rows = await offlineRows(chFile);
    expect(rows.impressions.length).toBeGreaterThan(3000);
    expect(rows.tiles.length).toBeGreaterThan(1000);
    expect(rows).toEqual(await offlineRows(clients[0] as ClickHouseClient));

    // A new process: its in-process state starts empty, so it rebuilds everything from the log: same result.
    const rebuilt = await open();
    await rebuilt.service.start();
    await until('the rebuild', () => rebuilt.caughtUp());
    await rebuilt.close();
    await expectSameVectors(features, contexts, rebuilt.online, embedded.online as MemoryStore);
    expect(await offlineRows(chFile)).toEqual(rows);

    // The dead letters went to the file log's dead-letter topic: the invalid and the late, once each (not again
    // on the rebuild).
    const dlq = await fileLog.endOffsets(`${ns}tributary_dead_letters`);
    expect(dlq.reduce((s, p) => s + p.offset, 0)).toBe((counts.invalid ?? 0) + (counts.late ?? 0));
  }, 240_000);
});
