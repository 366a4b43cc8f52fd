// The stream keeps its promise through a consumer-group rebalance and through Valkey and ClickHouse outages:
// the final state equals the in-process replay, nothing lost, nothing counted twice.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Valkey } from 'iovalkey';
import { AssignerProtocol } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AdImpression, EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import { ensureOfflineSchema } from '../../src/offline/schema.ts';
import { OfflineSink } from '../../src/offline/sink.ts';
import { StreamMetrics } from '../../src/streams/metrics.ts';
import type { OfflineWriter } from '../../src/streams/service.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import {
  caughtUp,
  expectSameVectors,
  publishScenario,
  readPartitions,
  referenceState,
  testStream,
  until,
} from '../support/streaming.ts';

const kafka = createKafka(KAFKA_BROKERS);
const valkey = new Valkey(VALKEY_URL, { enableAutoPipelining: true, maxRetriesPerRequest: 1 });
valkey.on('error', () => {}); // the outage test takes Valkey down on purpose
const features = new FeatureSet(DEFAULT_GROUPS);
afterAll(() => valkey.disconnect());

function service(ns: string, metrics: StreamMetrics, offline?: OfflineWriter) {
  const { service: svc, online } = testStream(kafka, valkey, features, ns, {
    maxBatch: 200,
    metrics,
    offline,
    logLevel: 'silent',
  });
  return { svc, online };
}

async function scenario(ns: string, seed: number, holdBack = 0) {
  const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
  await serde.prepare(EVENT_KINDS);
  const published = await publishScenario(
    kafka,
    serde,
    ns,
    {
      seed,
      days: 1,
      impressionsPerDay: 8000,
      lateShare: 0.03,
      duplicateShare: 0.03,
    },
    { holdBack },
  );
  const contexts = published.log
    .filter((r) => r.record.kind === 'impression')
    .map((r) => r.record.event as AdImpression);
  return { serde, contexts, ...published };
}

/** True when the consumer group is stable with two members, each holding partitions. */
async function bothAssigned(groupId: string): Promise<boolean> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const [group] = (await admin.describeGroups([groupId])).groups;
    return (
      group?.state === 'Stable' &&
      group.members.length === 2 &&
      group.members.every((m) =>
        Object.values(AssignerProtocol.MemberAssignment.decode(m.memberAssignment)?.assignment ?? {}).some(
          (partitions) => partitions.length > 0,
        ),
      )
    );
  } finally {
    await admin.disconnect();
  }
}

describe('stream resilience', () => {
  it('loses and duplicates nothing when a second instance joins and the first leaves (two rebalances)', async () => {
    const ns = `rb${Date.now()}.`;
    // Half the log waits until B holds partitions: otherwise A may finish everything before the rebalance.
    const { serde, contexts, sent, publishRest } = await scenario(ns, 44, 0.5);
    const [ma, mb] = [new StreamMetrics(), new StreamMetrics()];
    const a = service(ns, ma);
    const b = service(ns, mb);
    await a.svc.start();
    await until('instance A to make progress', () => a.svc.processed > sent * 0.2);
    await b.svc.start();
    await until('the group to settle with both members assigned', () => bothAssigned(`${ns}stream`));
    await publishRest();
    await until(
      'both instances to share the work',
      () => b.svc.processed > 0 && a.svc.processed + b.svc.processed > sent * 0.6,
    );
    await a.svc.stop();
    await until('B to finish', () => caughtUp(kafka, valkey, ns, `${ns}stream`));
    await b.svc.stop();
    expect(b.svc.processed).toBeGreaterThan(0);

    const ref = await referenceState(await readPartitions(kafka, ns, sent), ns, features, serde);
    await expectSameVectors(features, contexts, a.online, ref.store);
  }, 180_000);

  it('backs off through a Valkey outage and a ClickHouse outage, then converges exactly', async () => {
    const ns = `out${Date.now()}.`;
    const { serde, contexts, sent } = await scenario(ns, 55);
    const ch = await openClickHouse({ dir: mkdtempSync(join(tmpdir(), 'outage-ch-')) });
    await ensureOfflineSchema(ch);
    const sink = new OfflineSink(ch);
    let clickhouseDownUntil = 0;
    const flaky: OfflineWriter = {
      writeBatch: (id, rows) =>
        Date.now() < clickhouseDownUntil
          ? Promise.reject(new Error('injected: ClickHouse unavailable'))
          : sink.writeBatch(id, rows),
    };
    const metrics = new StreamMetrics();
    const s = service(ns, metrics, flaky);
    await s.svc.start();
    await until('progress', () => s.svc.processed > sent * 0.15);

    execFileSync('redis-cli', ['-u', VALKEY_URL, 'shutdown', 'save']); // down, state kept on disk
    await new Promise((r) => setTimeout(r, 3000));
    execFileSync('bash', ['scripts/services/valkey.sh', 'start'], { stdio: 'ignore' });
    await until('progress after Valkey is back', () => s.svc.processed > sent * 0.5);
    clickhouseDownUntil = Date.now() + 3000;
    await until('the stream to finish', () => caughtUp(kafka, valkey, ns, `${ns}stream`), 120_000);
    await s.svc.stop();

    const retries = (await metrics.sinkRetries.get()).values;
    expect(
      retries.find((v) => v.labels.sink === 'valkey' || v.labels.sink === 'checkpoint')?.value ?? 0,
    ).toBeGreaterThan(0);
    expect(retries.find((v) => v.labels.sink === 'clickhouse')?.value ?? 0).toBeGreaterThan(0);
    const ref = await referenceState(await readPartitions(kafka, ns, sent), ns, features, serde);
    await expectSameVectors(features, contexts, s.online, ref.store);
    const rows = await (
      await ch.query({
        query: `SELECT verdict, count() AS n FROM (SELECT verdict FROM impressions UNION ALL SELECT verdict FROM clicks) GROUP BY verdict ORDER BY verdict`,
        format: 'JSONEachRow',
      })
    ).json<{ verdict: string; n: string }>();
    expect(Object.fromEntries(rows.map((r) => [r.verdict, Number(r.n)]))).toEqual({
      applied: ref.counts.applied,
      duplicate: ref.counts.duplicate,
      late: ref.counts.late,
    });
    await ch.close();
  }, 240_000);
});
