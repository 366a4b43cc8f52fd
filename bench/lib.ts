// Shared by the benchmarks: where the servers are, options, measuring a phase (wall time, process CPU time, peak
// RSS, optionally a CPU profile), percentiles, and the results table.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { openClickHouse } from '../src/offline/clickhouse.ts';
import { ensureOfflineSchema } from '../src/offline/schema.ts';

/** The servers of `npm run services start`, moved by the same env vars as the services and the tests. */
export const SERVERS = {
  kafka: [`127.0.0.1:${process.env.KAFKA_PORT ?? '9092'}`],
  valkey: `redis://127.0.0.1:${process.env.VALKEY_PORT ?? '6379'}`,
  registry: `http://127.0.0.1:${process.env.REGISTRY_PORT ?? '8081'}/apis/ccompat/v7`,
  /** The three-broker Kafka and the Valkey Cluster (kafka-cluster.sh, valkey-cluster.sh). */
  kafkaCluster: [0, 1, 2].map((i) => `127.0.0.1:${Number(process.env.KAFKA_CLUSTER_PORT ?? 9191) + i}`),
  valkeyCluster: `redis://127.0.0.1:${process.env.VALKEY_CLUSTER_PORT ?? '7101'}`,
};

/** An embedded ClickHouse in a fresh temp dir with the offline schema, as `tributary stream` opens it; close removes it. */
export async function tempOfflineStore() {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-ch-'));
  const client = await openClickHouse({ dir });
  await ensureOfflineSchema(client);
  return {
    client,
    close: async () => {
      await client.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** One line of the table; ratio = value / baseline, a baseline measured in the same run. */
export interface Row {
  benchmark: string;
  metric: string;
  value: number;
  baseline?: number;
}

export interface BenchContext<K extends string = string> {
  /** The bench's options: `--name N`, else env BENCH_NAME (upper case, dashes as underscores), else the default. */
  options: Record<K, number>;
  /** Progress to stderr (stdout is for the table). */
  log(message: string): void;
  /** Starts measuring a phase; `label` names its CPU profile when `--cpu-prof DIR` is given. */
  meter(label: string): Promise<Meter>;
  /** `--cpu-prof DIR`, for a bench that measures another process (which then writes its profiles there). */
  profileDir?: string;
}

export interface Bench<K extends string = string> {
  name: string;
  description: string;
  /** Numeric options and their defaults. */
  options: Record<K, number>;
  run(ctx: BenchContext<K>): Promise<{ rows: Row[]; details: Record<string, unknown> }>;
}

export interface Measured {
  seconds: number;
  /** User + system CPU time of the whole process (all threads, e.g. the embedded ClickHouse's too). */
  cpuSeconds: number;
  /** Highest RSS sampled during the phase (every 50 ms; the V8 heap does not shrink between phases). */
  peakRssMB: number;
}

export class Meter {
  private readonly t0 = performance.now();
  private readonly cpu0 = process.cpuUsage();
  private peakRss = process.memoryUsage.rss();
  private readonly sampler = setInterval(() => {
    this.peakRss = Math.max(this.peakRss, process.memoryUsage.rss());
  }, 50);

  constructor(private readonly profile?: { session: Session; path: string }) {}

  static async start(label: string, profileDir?: string): Promise<Meter> {
    if (!profileDir) return new Meter();
    const session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.start');
    return new Meter({ session, path: join(profileDir, `${label}.cpuprofile`) });
  }

  async stop(): Promise<Measured> {
    const cpu = process.cpuUsage(this.cpu0);
    const m: Measured = {
      seconds: (performance.now() - this.t0) / 1000,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      peakRssMB: Math.max(this.peakRss, process.memoryUsage.rss()) / 2 ** 20,
    };
    clearInterval(this.sampler);
    if (this.profile) {
      const { profile } = await this.profile.session.post('Profiler.stop');
      mkdirSync(dirname(this.profile.path), { recursive: true });
      writeFileSync(this.profile.path, JSON.stringify(profile));
      this.profile.session.disconnect();
    }
    return m;
  }
}

/** Nearest-rank percentile of samples (p in 0..100). */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `done` every `everyMs` until true; throws after `timeoutMs` with what it was waiting for. */
export async function until(what: string, done: () => boolean, timeoutMs: number, everyMs = 2): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`);
    await sleep(everyMs);
  }
}

function fmt(v: number | undefined): string {
  if (v === undefined || Number.isNaN(v)) return '';
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US');
  return v.toPrecision(3);
}

function ratioText(r: Row): string {
  if (r.baseline === undefined || r.baseline === 0) return '';
  return `${(r.value / r.baseline).toFixed(2)}×`;
}

export function formatTable(rows: readonly Row[]): string {
  const head = ['benchmark', 'metric', 'value', 'baseline', 'ratio'];
  const body = rows.map((r) => [r.benchmark, r.metric, fmt(r.value), fmt(r.baseline), ratioText(r)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] as string).length)));
  const right = [false, false, true, true, true];
  const line = (cells: string[]) =>
    `| ${cells.map((c, i) => (right[i] ? c.padStart(widths[i] as number) : c.padEnd(widths[i] as number))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (right[i] ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(head), rule, ...body.map(line)].join('\n');
}

export function writeResults(dir: string, results: unknown): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(path, `${JSON.stringify(results, null, 2)}\n`);
  return path;
}
