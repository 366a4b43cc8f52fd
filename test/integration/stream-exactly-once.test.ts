// Exactly-once effect: a stream process SIGKILLed at random moments (start-up, rebalance, mid-batch) and restarted
// ends with the same online (Valkey) and offline (ClickHouse) state, served vectors included, as an uninterrupted run
// over the same log; the log is longer than the retention, so pruning runs while partitions lag each other, and
// `tributary parity` finds nothing on either run. CI runs a short version; the long one:
//   KILLS=25 PER_DAY=15000 npm run test:exactly-once
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Valkey } from 'iovalkey';
import { afterAll, describe, expect, it } from 'vitest';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { tileOf } from '../../src/features/window.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import type { Part } from '../../src/online/parts.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import { caughtUp, publishScenario } from '../support/streaming.ts';

const kafka = createKafka(KAFKA_BROKERS);
const valkey = new Valkey(VALKEY_URL);
/** Stream processes still running (a failed assertion leaves one): killed at the end. */
const children = new Set<ChildProcess>();
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  valkey.disconnect();
});
const stamp = Date.now();
const KILLS = Number(process.env.EXACTLY_ONCE_KILLS ?? 6);
const PER_DAY = Number(process.env.EXACTLY_ONCE_PER_DAY ?? 1500);
const LATENESS_MS = 3600_000;
const features = new FeatureSet(DEFAULT_GROUPS);

function startStream(ns: string, dir: string): ChildProcess {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'src/cli/main.ts',
      'stream',
      '--namespace',
      ns,
      '--max-batch',
      '50',
      '--allowed-lateness',
      '1h',
      '--record-served',
    ],
    {
      env: {
        ...process.env,
        TRIBUTARY_KAFKA: KAFKA_BROKERS.join(','),
        TRIBUTARY_SCHEMA_REGISTRY: REGISTRY_URL,
        TRIBUTARY_VALKEY: VALKEY_URL,
        TRIBUTARY_CLICKHOUSE_DIR: dir,
        TRIBUTARY_LOG_LEVEL: process.env.EXACTLY_ONCE_LOG_LEVEL ?? 'warn',
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    },
  );
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

const exited = (p: ChildProcess) =>
  new Promise<void>((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once('exit', () => r())));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function runToEnd(ns: string, dir: string): Promise<void> {
  const child = startStream(ns, dir);
  const deadline = Date.now() + 600_000;
  while (!(await caughtUp(kafka, valkey, ns, `${ns}tributary-stream`))) {
    if (Date.now() > deadline || child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`stream ${ns} did not catch up (exit ${child.exitCode ?? child.signalCode})`);
    }
    await sleep(300);
  }
  child.kill('SIGTERM');
  await exited(child);
}

/**
 * Where the group may prune below: its slowest partition's newest event time, minus the lateness (as the stream
 * computes it). Also the per-partition progress itself, which both runs must agree on.
 */
async function pruneLine(ns: string) {
  const stored = await valkey.hgetall(`tb:{seq|${ns}tributary-stream}|progress`);
  const progress = Object.fromEntries(Object.entries(stored).map(([p, t]) => [p.slice(ns.length), t]));
  const slowest = Math.min(...Object.values(progress).map(Number));
  return { progress, before: slowest - LATENESS_MS };
}

/** Per entity name and series id: the series (its tile width and longest window). */
const seriesByEntity = new Map(
  features.groups.map((g) => [g.group.entity.name, new Map(g.series.map((x) => [x.id, x] as const))] as const),
);

/**
 * The online state any read can still ask for, keys without the namespace: per entity hash and source partition,
 * its part's tiles that a read at or after `before` can ask for (older ones are the writer's to drop, at moments
 * that differ run to run), members sorted. Bookkeeping is left out: batch markers (they name batch ends).
 */
async function onlineState(ns: string, before: number): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const keys = (await valkey.keys(`${ns}tb:*`)).filter((k) => !k.includes('{ckpt|'));
  for (const k of keys.sort()) {
    const name = k.slice(ns.length);
    const series = seriesByEntity.get(/^tb:\{([^:]+):/.exec(name)?.[1] ?? '');
    const kept: Record<string, unknown> = {};
    for (const [source, json] of Object.entries(await valkey.hgetall(k))) {
      if (source.startsWith('@')) continue;
      const part = JSON.parse(json) as Part;
      const tiles: Record<string, unknown[]> = {};
      for (const [id, pairs] of [...Object.entries(part.n), ...Object.entries(part.s)]) {
        const x = series?.get(id);
        const live: unknown[] = [];
        for (let i = 0; i < pairs.length; i += 2) {
          const tile = pairs[i] as number;
          if (x && tile < tileOf(before, x.tileMs) - x.maxTiles) continue;
          const v = pairs[i + 1];
          live.push(tile, Array.isArray(v) ? [...v].sort() : v);
        }
        if (live.length > 0) tiles[id] = live;
      }
      if (Object.keys(tiles).length > 0) kept[source.slice(ns.length)] = tiles; // topics carry the namespace
    }
    if (Object.keys(kept).length > 0) out[name] = kept;
  }
  return out;
}

/** `tributary parity` over a run's ClickHouse: its exit code and last line. */
async function parity(dir: string): Promise<{ code: number; line: string }> {
  const run = promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', 'src/cli/main.ts', 'parity', '--allowed-lateness', '1h'],
    { env: { ...process.env, TRIBUTARY_CLICKHOUSE_DIR: dir }, maxBuffer: 64 << 20 },
  );
  const r = await run.then(
    (ok) => ({ code: 0, out: ok.stdout }),
    (err: { code: number; stdout: string }) => ({ code: err.code, out: err.stdout }),
  );
  return { code: r.code, line: r.out.trim().split('\n').at(-1) ?? '' };
}

async function offlineState(dir: string) {
  const ch = await openClickHouse({ dir });
  const q = async (query: string) => (await ch.query({ query, format: 'JSONEachRow' })).json();
  const state = {
    impressions: await q(
      'SELECT count() AS n, sum(cityHash64(partition, offset, event_id, verdict, ingest_time)) AS h FROM impressions',
    ),
    clicks: await q(
      'SELECT count() AS n, sum(cityHash64(partition, offset, event_id, verdict, ingest_time)) AS h FROM clicks',
    ),
    tiles: await q('SELECT entity, field, op, value FROM feature_tiles_current ORDER BY entity, field, op'),
    // Which impressions were served, each once (their vectors depend on how batches of partitions interleaved,
    // which differs run to run: parity checks them against the backfill's replay of each run's own order).
    served: await q(
      'SELECT count() AS n, uniqExact(partition, offset) AS u, sum(cityHash64(partition, offset, event_id)) AS h FROM served_vectors',
    ),
  };
  await ch.close();
  return state;
}

describe('exactly-once effect under SIGKILL', () => {
  it(`killed ${KILLS} times equals uninterrupted, online, offline and served; parity holds on both`, async () => {
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    // Ten days: past the retention, so the stream prunes; clicks' partitions span days per batch while
    // impressions' span hours, so partitions lag each other.
    const scenario = { seed: 7, days: 10, impressionsPerDay: PER_DAY, lateShare: 0.03, duplicateShare: 0.03 };
    const clean = `eo${stamp}c.`;
    const killed = `eo${stamp}k.`;
    await publishScenario(kafka, serde, clean, scenario);
    await publishScenario(kafka, serde, killed, scenario);
    const dirs = { clean: mkdtempSync(join(tmpdir(), 'eo-clean-')), killed: mkdtempSync(join(tmpdir(), 'eo-killed-')) };

    await runToEnd(clean, dirs.clean);

    // Odd kills come early (start-up, joining the group while the last victim's session expires), even ones late
    // enough to land mid-batch.
    let kills = 0;
    while (kills < KILLS) {
      const child = startStream(killed, dirs.killed);
      await sleep(kills % 2 === 0 ? 300 + Math.random() * 6000 : 6000 + Math.random() * 3000);
      if (await caughtUp(kafka, valkey, killed, `${killed}tributary-stream`)) {
        child.kill('SIGTERM');
        await exited(child);
        break;
      }
      child.kill('SIGKILL');
      await exited(child);
      kills++;
    }
    expect(kills, 'caught up before every kill landed: lengthen the log').toBe(KILLS);
    await runToEnd(killed, dirs.killed);

    const lines = [await pruneLine(clean), await pruneLine(killed)];
    expect(lines[1]?.progress).toEqual(lines[0]?.progress);
    const before = lines[0]?.before as number;
    const [a, b] = [await onlineState(clean, before), await onlineState(killed, before)];
    expect(Object.keys(a).length).toBeGreaterThan(1000);
    expect(b).toEqual(a);
    const [oa, ob] = [await offlineState(dirs.clean), await offlineState(dirs.killed)];
    expect((oa.impressions as { n: string }[])[0]?.n).not.toBe('0');
    const served = (oa.served as { n: string; u: string }[])[0];
    expect(served?.n).not.toBe('0');
    expect(served?.n).toBe(served?.u);
    expect(ob).toEqual(oa);
    for (const dir of [dirs.clean, dirs.killed]) {
      const p = await parity(dir);
      expect(p.line).toMatch(/mismatches 0 /);
      expect(p.code).toBe(0);
    }
  }, 3_600_000);
});
