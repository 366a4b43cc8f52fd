// The live parity check on real servers (Kafka, Valkey, ClickHouse through the HTTP stand-in): hosted by a stream
// that records served vectors it checks every sampled impression and finds nothing wrong; after a fault in the online
// store (a feature's tile altered in Valkey between runs, as a lost or doubled write leaves it) a standalone
// `tributary verify --follow` finds exactly the features that read it, logs and stores each mismatch, exports the
// counters, and resumes where the hosted check stopped without counting anything twice.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { Valkey } from 'iovalkey';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sampleThreshold } from '../../src/backfill/live-parity.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import type { AdImpression } from '../../src/events/types.ts';
import { EVENT_KINDS } from '../../src/events/types.ts';
import { Admission } from '../../src/features/admission.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import type { Part } from '../../src/online/parts.ts';
import { ValkeyCheckpoints } from '../../src/streams/checkpoint.ts';
import { type ClickHouseHttpStandIn, startClickHouseHttp } from '../support/clickhouse-http.ts';
import { freePort, KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import { exited, parity } from '../support/stream-runs.ts';
import { caughtUp, publishScenario, until } from '../support/streaming.ts';

const kafka = createKafka(KAFKA_BROKERS);
const valkey = new Valkey(VALKEY_URL);
const features = new FeatureSet(DEFAULT_GROUPS);
const SAMPLE = 0.5;
const dir = mkdtempSync(join(tmpdir(), 'live-parity-ch-'));
let ch: ClickHouseClient;
let http: ClickHouseHttpStandIn;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  ch = await openClickHouse({ dir });
  http = await startClickHouseHttp(dir);
});
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  valkey.disconnect();
  await http?.close();
  await ch?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A `tributary` process on the test servers under namespace `ns`; its stderr (pino JSON lines) is kept. */
function cli(ns: string, args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', '--namespace', ns, ...args], {
    env: {
      ...process.env,
      TRIBUTARY_KAFKA: KAFKA_BROKERS.join(','),
      TRIBUTARY_SCHEMA_REGISTRY: REGISTRY_URL,
      TRIBUTARY_VALKEY: VALKEY_URL,
      TRIBUTARY_CLICKHOUSE: http.url,
      TRIBUTARY_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (b: Buffer) => {
    out.stdout += b;
  });
  child.stderr.on('data', (b: Buffer) => {
    out.stderr += b;
  });
  const done = exited(child).then(() => {
    children.delete(child);
    return child.exitCode;
  });
  return { child, out, done };
}

const rows = async <T>(query: string) =>
  (
    await ch.query({
      query,
      format: 'JSONEachRow',
      clickhouse_settings: { output_format_json_quote_64bit_integers: 0 },
    })
  ).json<T>();

/** Served vectors of impressions in the sample, counted by ClickHouse's own CRC32 (not the check's). */
const sampledServed = async () =>
  (
    await rows<{ n: number }>(
      `SELECT count() AS n FROM served_vectors FINAL WHERE CRC32(event_id) < ${sampleThreshold(SAMPLE)}`,
    )
  )[0]?.n ?? 0;

const liveTotals = async () =>
  (
    await rows<{ checked: number; missing: number; last: number; rows: number }>(
      'SELECT sum(checked) AS checked, sum(missing) AS missing, max(last_batch_seq) AS last, count() AS rows FROM parity_live',
    )
  )[0] as { checked: number; missing: number; last: number; rows: number };

/** Per feature, the mismatches parity_live counted. */
const liveMismatches = async () =>
  Object.fromEntries(
    (
      await rows<{ feature: string; n: number }>(
        `SELECT feature, sum(n) AS n FROM parity_live ARRAY JOIN features AS feature, mismatches AS n
         GROUP BY feature HAVING n > 0 ORDER BY feature`,
      )
    ).map((r) => [r.feature, r.n]),
  );

/** The features that read numeric series `seriesId` of group `g`: its windows, and the ratios over them. */
function featuresReading(g: number, seriesId: string): Set<string> {
  const group = features.groups[g] as (typeof features.groups)[number];
  const s = group.series.findIndex((x) => x.id === seriesId);
  const slots = group.slots.flatMap((slot, i) => (slot.series === s ? [i] : []));
  const touched = [
    ...slots.map((i) => (group.slots[i] as (typeof group.slots)[number]).feature),
    ...group.ratios.filter((r) => slots.includes(r.num) || slots.includes(r.den)).map((r) => r.feature),
  ];
  return new Set(touched.map((f) => features.names[f] as string));
}

describe('live parity', () => {
  it('checks sampled served vectors as they are recorded, and finds a fault in the online store', async () => {
    const ns = `lp${Date.now()}.`;
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    const { log, held, publishRest } = await publishScenario(
      kafka,
      serde,
      ns,
      { seed: 18, days: 1, impressionsPerDay: 3000, ads: 60, lateShare: 0.02, duplicateShare: 0.02 },
      { holdBack: 0.4 },
    );

    // 1. The stream hosts the check: every sampled impression compared, none wrong.
    const hosted = cli(ns, [
      'stream',
      '--max-batch',
      '200',
      '--record-served',
      '--verify',
      '--verify-sample',
      String(SAMPLE),
      '--verify-flush',
      '1s',
      '--until-caught-up',
    ]);
    expect(await hosted.done, hosted.out.stderr).toBe(0);
    const first = await liveTotals();
    const sampled = await sampledServed();
    expect(sampled).toBeGreaterThan(300);
    expect(first).toMatchObject({ checked: sampled, missing: 0 });
    expect(await liveMismatches()).toEqual({});

    // 2. A fault: one ad's hourly impression count gets its newest tile raised, as a doubled write would leave it
    // (hourly: the next hours' reads cover that tile; a daily tile would still be the one being filled).
    const g = features.groups.findIndex((x) => x.group.entity.name === 'ad');
    const series = (features.groups[g] as (typeof features.groups)[number]).series.find(
      (s) => s.agg.name === 'impressions' && s.tileMs === 3600_000,
    ) as { id: string };
    const later = log.slice(log.length - held).flatMap((r) => (r.record.kind === 'impression' ? [r.record.event] : []));
    const counts = new Map<string, number>();
    for (const i of later as AdImpression[]) counts.set(i.ad_id, (counts.get(i.ad_id) ?? 0) + 1);
    const ad = [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] as string;
    const key = `${ns}tb:{ad:${ad}}`;
    const stored = await valkey.hgetall(key);
    const [field, json] = Object.entries(stored).find(([f, v]) => !f.startsWith('@') && JSON.parse(v).n[series.id]) as [
      string,
      string,
    ];
    const part = JSON.parse(json) as Part;
    const pairs = part.n[series.id] as number[];
    let newest = 0;
    for (let i = 2; i < pairs.length; i += 2) if ((pairs[i] as number) > (pairs[newest] as number)) newest = i;
    pairs[newest + 1] = (pairs[newest + 1] as number) + 7;
    await valkey.hset(key, field, JSON.stringify(part));

    // 3. The rest of the traffic through a restarted stream, checked by `tributary verify --follow` beside it.
    await publishRest();
    const port = await freePort();
    const verify = cli(ns, [
      'verify',
      '--follow',
      '--sample',
      String(SAMPLE),
      '--interval',
      '1s',
      '--flush-every',
      '1s',
      '--metrics-port',
      String(port),
    ]);
    const stream = cli(ns, ['stream', '--max-batch', '200', '--record-served', '--until-caught-up']);
    expect(await stream.done, stream.out.stderr).toBe(0);
    const settled = Number(await valkey.get(`tb:{seq|${ns}tributary-stream}`));
    await until('the check to reach the stream', async () => (await liveTotals()).last >= settled, 60_000).catch(
      (err: Error) => {
        throw new Error(`${err.message}: ${verify.out.stderr.slice(-3000)}`);
      },
    );
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    verify.child.kill('SIGTERM');
    expect(await verify.done, verify.out.stderr).toBe(1);
    expect(await caughtUp(kafka, valkey, ns, `${ns}tributary-stream`)).toBe(true);

    // Nothing counted twice across the restart: every sampled impression once, the hosted check's ones included.
    const all = await liveTotals();
    expect(all).toMatchObject({ checked: await sampledServed(), missing: 0 });
    expect(all.checked).toBeGreaterThan(first.checked);

    // Exactly the features reading the altered series, for impressions of that ad only.
    const touched = featuresReading(g, series.id);
    const found = await liveMismatches();
    const bad = Object.keys(found);
    expect(new Set(bad)).toEqual(touched);
    const stored2 = await rows<{
      feature: string;
      event_id: string;
      served: number;
      recomputed: number;
      offset: number;
    }>('SELECT feature, event_id, served, recomputed, offset FROM parity_mismatches FINAL');
    expect(stored2.length).toBe(Object.values(found).reduce((a, b) => a + b, 0));
    const adOf = new Map((later as AdImpression[]).map((i) => [i.event_id, i.ad_id]));
    expect(new Set(stored2.map((r) => adOf.get(r.event_id)))).toEqual(new Set([ad]));
    expect(stored2.every((r) => r.served !== r.recomputed)).toBe(true);

    // Each mismatch logged with its event and feature; the counters exported.
    const logged = verify.out.stderr
      .split('\n')
      .filter((l) => l.includes('parity mismatch'))
      .map((l) => JSON.parse(l) as { event_id: string; feature: string; served: number; recomputed: number });
    expect(logged.map((l) => `${l.event_id}/${l.feature}`).sort()).toEqual(
      stored2.map((r) => `${r.event_id}/${r.feature}`).sort(),
    );
    for (const [feature, n] of Object.entries(found))
      expect(metrics).toContain(`tributary_parity_mismatches_total{feature="${feature}"} ${n}`);
    expect(metrics).toMatch(/tributary_parity_checked_total \d+/);

    // 4. A check started again has nothing new to count.
    const again = cli(ns, ['verify', '--sample', String(SAMPLE)]);
    expect(await again.done, again.out.stderr).toBe(0);
    expect(JSON.parse(again.out.stdout)).toMatchObject({ checked: 0, mismatches: 0 });
    expect((await liveTotals()).checked).toBe(all.checked);

    // 5. `tributary parity` over the whole history agrees on which features are wrong, and keeps its result.
    const batch = await parity({ url: http.url });
    expect(batch.code).toBe(1);
    const [run] = await rows<{ features: string[]; served_mismatches: number[]; impressions: number }>(
      'SELECT features, served_mismatches, impressions FROM parity_runs ORDER BY run_at DESC LIMIT 1',
    );
    const batchBad = run?.features.filter((_, i) => (run.served_mismatches[i] as number) > 0) ?? [];
    expect(new Set(batchBad)).toEqual(touched);
    expect(run?.impressions).toBeGreaterThan(all.checked);
  }, 180_000);

  it('reads no further than the lowest batch still in flight, whichever order batches commit in', async () => {
    const checkpoints = new ValkeyCheckpoints(valkey, `lpseq${Date.now()}`);
    expect(await checkpoints.settledThrough()).toBe(0);
    const a = await checkpoints.begin('t/0', 0, 9);
    const b = await checkpoints.begin('t/1', 0, 9);
    expect([a, b]).toEqual([1, 2]);
    await checkpoints.commit('t/1', 10, new Admission(0));
    expect(await checkpoints.settledThrough()).toBe(0); // batch 2 is in, batch 1 may still write rows
    await checkpoints.commit('t/0', 10, new Admission(0));
    expect(await checkpoints.settledThrough()).toBe(2);
    await checkpoints.begin('t/0', 10, 19);
    expect(await checkpoints.settledThrough()).toBe(2);
  });
});
