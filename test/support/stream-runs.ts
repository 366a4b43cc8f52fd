// `tributary stream` processes as tests run them (children on the test servers, under a namespace), and the state
// two runs over the same log must agree on: the online state any read can still ask for, the offline tables, the
// progress per partition, and what `tributary parity` says of a run's ClickHouse.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import type { Cluster, Redis } from 'iovalkey';
import type { Kafka } from 'kafkajs';
import type { FeatureSet } from '../../src/features/compile.ts';
import { tileOf } from '../../src/features/window.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import type { Part } from '../../src/online/parts.ts';
import { KAFKA_BROKERS, REGISTRY_URL } from './services.ts';
import { caughtUp, LATENESS_MS } from './streaming.ts';
import { keysByMaster } from './valkey-cluster.ts';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const exited = (p: ChildProcess) =>
  new Promise<void>((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once('exit', () => r())));

export class StreamRuns {
  /** Stream processes still running (a failed assertion leaves some): killed by stopAll. */
  readonly children = new Set<ChildProcess>();
  /** Per entity name and series id: the series (its tile width and longest window). */
  private readonly seriesByEntity: Map<string, Map<string, { tileMs: number; maxTiles: number }>>;

  constructor(
    private readonly kafka: Kafka,
    private readonly valkey: Redis | Cluster,
    private readonly valkeyUrl: string,
    features: FeatureSet,
  ) {
    this.seriesByEntity = new Map(
      features.groups.map((g) => [g.group.entity.name, new Map(g.series.map((x) => [x.id, x] as const))] as const),
    );
  }

  /**
   * A `tributary stream` process (small batches, 1 h lateness) writing its ClickHouse: the embedded engine at a
   * directory, or a server at a URL.
   */
  start(ns: string, offline: OfflineAt, args: string[] = ['--record-served']): ChildProcess {
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
        ...args,
      ],
      {
        env: {
          ...process.env,
          TRIBUTARY_KAFKA: KAFKA_BROKERS.join(','),
          TRIBUTARY_SCHEMA_REGISTRY: REGISTRY_URL,
          TRIBUTARY_VALKEY: this.valkeyUrl,
          ...clickhouseEnv(offline),
          TRIBUTARY_LOG_LEVEL: process.env.STREAM_RUNS_LOG_LEVEL ?? 'warn',
        },
        stdio: ['ignore', 'inherit', 'inherit'],
      },
    );
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** Whether group `group` (of namespace `ns`) has processed every partition to the end of the log. */
  caughtUp(ns: string, group = 'tributary-stream'): Promise<boolean> {
    return caughtUp(this.kafka, this.valkey, ns, `${ns}${group}`);
  }

  /** Waits until `group` has caught up while `alive` processes run (any dying fails), then stops them (SIGTERM). */
  async untilCaughtUp(ns: string, alive: ChildProcess[], group = 'tributary-stream'): Promise<void> {
    const deadline = Date.now() + 600_000;
    while (!(await this.caughtUp(ns, group))) {
      const dead = alive.find((c) => c.exitCode !== null || c.signalCode !== null);
      if (Date.now() > deadline || dead) {
        throw new Error(`group ${ns}${group} did not catch up (exit ${dead?.exitCode ?? dead?.signalCode})`);
      }
      await sleep(300);
    }
    for (const c of alive) c.kill('SIGTERM');
    await Promise.all(alive.map(exited));
  }

  /** One process from where the group is to the end of the log. */
  async runToEnd(ns: string, offline: OfflineAt, args?: string[]): Promise<void> {
    await this.untilCaughtUp(ns, [this.start(ns, offline, args)]);
  }

  stopAll(): void {
    for (const c of this.children) c.kill('SIGKILL');
  }

  /**
   * Where the group may prune below: its slowest partition's newest event time, minus the lateness (as the stream
   * computes it). Also the per-partition progress itself, which two runs must agree on.
   */
  async pruneLine(ns: string) {
    const stored = await this.valkey.hgetall(`tb:{seq|${ns}tributary-stream}|progress`);
    const progress = Object.fromEntries(Object.entries(stored).map(([p, t]) => [p.slice(ns.length), t]));
    const slowest = Math.min(...Object.values(progress).map(Number));
    return { progress, before: slowest - LATENESS_MS };
  }

  /**
   * The online state any read can still ask for, keys without the namespace: per entity hash and source partition,
   * its part's tiles that a read at or after `before` can ask for (older ones are the writer's to drop, at moments
   * that differ run to run), members sorted. Bookkeeping is left out: batch markers (they name batch ends).
   */
  async onlineState(ns: string, before: number): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    const all = this.valkey.isCluster
      ? (await keysByMaster(this.valkey as Cluster, `${ns}tb:*`)).flat()
      : await this.valkey.keys(`${ns}tb:*`);
    const keys = all.filter((k) => !k.includes('{ckpt|'));
    for (const k of keys.sort()) {
      const name = k.slice(ns.length);
      const series = this.seriesByEntity.get(/^tb:\{([^:]+):/.exec(name)?.[1] ?? '');
      const kept: Record<string, unknown> = {};
      for (const [source, json] of Object.entries(await this.valkey.hgetall(k))) {
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
}

/** A run's ClickHouse: the embedded engine's directory, or a server's URL. */
export type OfflineAt = string | { url: string };

const clickhouseEnv = (at: OfflineAt) =>
  typeof at === 'string' ? { TRIBUTARY_CLICKHOUSE_DIR: at } : { TRIBUTARY_CLICKHOUSE: at.url };

/** `tributary parity` over a run's ClickHouse: its exit code and last line. */
export async function parity(at: OfflineAt): Promise<{ code: number; line: string }> {
  const run = promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', 'src/cli/main.ts', 'parity', '--allowed-lateness', '1h'],
    { env: { ...process.env, ...clickhouseEnv(at) }, maxBuffer: 64 << 20 },
  );
  const r = await run.then(
    (ok) => ({ code: 0, out: ok.stdout }),
    (err: { code: number; stdout: string }) => ({ code: err.code, out: err.stdout }),
  );
  return { code: r.code, line: r.out.trim().split('\n').at(-1) ?? '' };
}

/** A run's offline tables, as counts and hashes of what must not differ between runs. */
export async function offlineState(dir: string) {
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
