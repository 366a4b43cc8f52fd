// The ranking benchmark: POST /v1/rank on a real `tributary serve` (a child, so the load generator does not share
// its event loop; --workers processes, 2 by default: the machine's cores) over a real local Valkey holding the
// features of a generated log (its tiles applied through ValkeyStore, as the stream writes them) and a model
// trained by the real backfill + `train`.
// autocannon drives it with one connection (each request alone) and at saturation (--connections, no rate); a
// paced, open-loop generator drives the fixed rate (--rate): oha (Rust, bench/oha-load.ts) when scripts/tools/oha.sh
// has installed it, else bench/paced-load.ts (Node); the table names the one that ran. autocannon's rate mode sends
// each second's quota in a burst when the second starts, which measures bursts, not a rate. --candidates per
// request; the baseline is the same run with --baseline-candidates.
// Time shares come from the server's own histograms (tributary_rank_stage_seconds: the Valkey read, vector
// assembly, the ONNX run), differenced over each phase; they are wall times, so under concurrency they include
// waiting for the server's event loop (the "alone" phase gives the clean shares). autocannon's latencies have
// 1 ms resolution; the paced phase's are exact. CPU per ranking is counted for the server (all its workers), Valkey
// and this process (load generator and live writes) over each phase: on one shared machine, their sum is what
// bounds the rate. Last, the paced phase again against a stub server (bench/stub-server.ts: same workers, only
// parses each body and lists its candidates back): the latency floor of this machine and this generator; and against
// the stub doing a ranking's I/O too (one Valkey read of the request's user entities, one ONNX run): the floor of
// any ranking over this store and model, before plan, cached reads, assembly and validation.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import autocannon from 'autocannon';
import { Valkey } from 'iovalkey';
import { generate } from '../src/events/generator.ts';
import type { AdImpression } from '../src/events/types.ts';
import { FeatureSet } from '../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../src/features/definitions.ts';
import { ModelRegistry } from '../src/model/registry.ts';
import { applyLog } from '../src/online/part-writer.ts';
import { ValkeyStore } from '../src/online/valkey-store.ts';
import { rankBody, replayRecords, trainAndRegister } from '../test/support/models.ts';
import { freePort } from '../test/support/services.ts';
import { type Bench, type Row, SERVERS, sleep } from './lib.ts';
import { findOha, ohaLoad } from './oha-load.ts';
import type { PacedLoad, PacedResult } from './paced-load.ts';

type Options =
  | 'impressions'
  | 'candidates'
  | 'baseline-candidates'
  | 'rate'
  | 'seconds'
  | 'connections'
  | 'timeout-ms'
  | 'live-rate'
  | 'workers'
  | 'node-generator';

/**
 * Live traffic while the phases run, as the stream would write it: every 100 ms a batch of impressions (copies of
 * generated ones) through the same ValkeyStore. Most are in the read time's own minute (no ranking reads them
 * yet); LATE_SHARE arrive a minute late, into windows rankings read: they change candidates' stored fields, so
 * the server's read cache sees invalidations as it would in production.
 */
const LATE_SHARE = 0.05;
class LiveWriter {
  private timer: NodeJS.Timeout | undefined;
  private written = 0;
  private batches = 0;
  private busy = false;

  constructor(
    private readonly store: ValkeyStore,
    private readonly templates: readonly AdImpression[],
    private readonly readTime: number,
    private readonly rate: number,
  ) {}

  start(): void {
    if (this.rate <= 0) return;
    const perBatch = Math.max(1, Math.round(this.rate / 10));
    this.timer = setInterval(() => {
      if (this.busy) return; // Valkey is behind: skip a beat rather than pile up
      this.busy = true;
      const events: AdImpression[] = [];
      for (let i = 0; i < perBatch; i++, this.written++) {
        const t = this.templates[(this.written * 7919) % this.templates.length] as AdImpression;
        const late = (this.written % 1000) / 1000 < LATE_SHARE;
        const event_time = this.readTime - (late ? 60_000 : 0) + (this.written % 50_000);
        events.push({ ...t, event_id: `live-${this.written}`, event_time });
      }
      void this.store
        .applyBatch({ source: 'impression', events }, 'bench-live/0', ++this.batches, this.readTime)
        .finally(() => {
          this.busy = false;
        });
    }, 100);
  }

  stop(): number {
    clearInterval(this.timer);
    return this.written;
  }
}

/** Mean ms per ranking in each stage, and rankings answered with defaults, from /metrics. */
interface StageTotals {
  count: number;
  seconds: Record<'valkey' | 'assembly' | 'onnx', number>;
  defaulted: number;
  cache: { hits: number; misses: number; invalidations: number };
  /** CPU seconds (user + system) so far: the server process, Valkey, and this process (load and live writes). */
  cpu: { server: number; valkey: number; bench: number };
  /** The server's garbage-collection pauses so far, seconds (every kind). */
  gc: number;
}

async function stageTotals(base: string, valkey: Valkey): Promise<StageTotals> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const info = String(await valkey.call('INFO', 'cpu'));
  const cpuOf = (name: string) => Number(info.match(new RegExp(`^used_cpu_${name}:(\\S+)`, 'm'))?.[1] ?? 0);
  const bench = process.cpuUsage();
  const value = (re: RegExp) => Number(text.match(re)?.[1] ?? 0);
  const sum = (stage: string) => value(new RegExp(`tributary_rank_stage_seconds_sum\\{stage="${stage}"\\} (\\S+)`));
  return {
    // Rankings (one ONNX run each), or the stub server's answers.
    count: value(/tributary_rank_stage_seconds_count\{stage="onnx"\} (\S+)/) || value(/^stub_answered_total (\S+)/m),
    seconds: { valkey: sum('valkey'), assembly: sum('assembly'), onnx: sum('onnx') },
    defaulted: value(/tributary_rankings_total\{features="defaults"\} (\S+)/),
    cpu: {
      server: value(/^process_cpu_seconds_total (\S+)/m),
      valkey: cpuOf('user') + cpuOf('sys'),
      bench: (bench.user + bench.system) / 1e6,
    },
    gc: [...text.matchAll(/^nodejs_gc_duration_seconds_sum\{kind="\w+"\} (\S+)/gm)].reduce(
      (t, m) => t + Number(m[1]),
      0,
    ),
    cache: {
      hits: value(/tributary_read_cache\{count="hits"\} (\S+)/),
      misses: value(/tributary_read_cache\{count="misses"\} (\S+)/),
      invalidations: value(/tributary_read_cache\{count="invalidations"\} (\S+)/),
    },
  };
}

interface PhaseResult {
  rps: number;
  p50: number;
  p99: number;
  p999: number;
  /** The paced generator's own p99 lag (due to its loop reaching the request), ms: part of p99 on a shared machine. */
  sendLagP99?: number;
  non2xx: number;
  errors: number;
  /** Mean ms per ranking in each stage, server side. */
  stageMs: Record<'valkey' | 'assembly' | 'onnx', number>;
  /** CPU ms per ranking: the server's (HTTP, JSON, reads, assembly, ONNX: all of it), Valkey's, and this process's
   * (the load generator, and the live writes when on): the machine's budget per ranking. */
  cpuMs: { server: number; valkey: number; bench: number };
  /** The server's GC pauses per ranking, ms (part of its CPU; each pause also delays the rankings waiting). */
  gcMs: number;
  defaulted: number;
  /** Candidate fields answered by the server's read cache, and its invalidations (see LiveWriter). */
  cacheHitShare: number;
  invalidations: number;
}

async function phase(
  base: string,
  valkey: Valkey,
  bodies: string[],
  o: { seconds: number; connections: number; rate?: number; generator?: Generator },
): Promise<PhaseResult> {
  if (o.rate) return paced(base, valkey, bodies, { ...o, rate: o.rate, generator: o.generator ?? { name: 'node' } });
  const before = await stageTotals(base, valkey);
  let i = 0;
  const result = await autocannon({
    url: base,
    connections: o.connections,
    duration: o.seconds,
    requests: [
      {
        method: 'POST',
        path: '/v1/rank',
        headers: { 'content-type': 'application/json' },
        setupRequest: (req) => ({ ...req, body: bodies[i++ % bodies.length] }),
      },
    ],
  });
  const stages = stagesBetween(before, await stageTotals(base, valkey));
  const latency = result.latency;
  return {
    rps: result.requests.average,
    p50: latency.p50 as number,
    p99: latency.p99 as number,
    p999: latency.p99_9 as number,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
    ...stages,
  };
}

/** Server-side stage means, defaulted rankings and read-cache counts between two /metrics readings. */
function stagesBetween(
  before: StageTotals,
  after: StageTotals,
  /** CPU the bench spent outside this process meanwhile (a native load generator). */
  childCpuSeconds = 0,
): Pick<PhaseResult, 'stageMs' | 'cpuMs' | 'gcMs' | 'defaulted' | 'cacheHitShare' | 'invalidations'> {
  const n = after.count - before.count || 1;
  const ms = (s: keyof StageTotals['seconds']) => ((after.seconds[s] - before.seconds[s]) / n) * 1000;
  const hits = after.cache.hits - before.cache.hits;
  const misses = after.cache.misses - before.cache.misses;
  return {
    stageMs: { valkey: ms('valkey'), assembly: ms('assembly'), onnx: ms('onnx') },
    cpuMs: {
      server: ((after.cpu.server - before.cpu.server) / n) * 1000,
      valkey: ((after.cpu.valkey - before.cpu.valkey) / n) * 1000,
      bench: ((after.cpu.bench - before.cpu.bench + childCpuSeconds) / n) * 1000,
    },
    gcMs: ((after.gc - before.gc) / n) * 1000,
    defaulted: after.defaulted - before.defaulted,
    cacheHitShare: hits / (hits + misses || 1),
    invalidations: after.cache.invalidations - before.cache.invalidations,
  };
}

/**
 * Runs `body` against bench/stub-server.ts with `workers` workers, started here and stopped after; `io`: its I/O
 * floor's arguments (--io VALKEY NAMESPACE MODELS).
 */
async function withStub<T>(workers: number, body: (base: string) => Promise<T>, io: string[] = []): Promise<T> {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const file = join(import.meta.dirname, 'stub-server.ts');
  const stub = spawn(process.execPath, ['--import', 'tsx', file, String(port), String(workers), ...io], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    await untilReady(base, stub, 'the stub server');
    return await body(base);
  } finally {
    const exited = new Promise((resolve) => stub.once('exit', resolve));
    stub.kill('SIGTERM');
    await exited;
  }
}

/** Waits for `base`/readyz to answer 200; throws when `child` exits first or 30 s pass. */
async function untilReady(base: string, child: ChildProcess, name: string): Promise<void> {
  for (let t = 0; ; t++) {
    if ((await fetch(`${base}/readyz`).catch(() => null))?.status === 200) return;
    if (t > 300 || child.exitCode !== null) throw new Error(`${name} did not become ready`);
    await sleep(100);
  }
}

/** The paced phase's generator: oha when installed (scripts/tools/oha.sh), else bench/paced-load.ts. */
type Generator = { name: 'oha'; bin: string } | { name: 'node' };

/** The paced phase, with the server's stage times over it and the generator's CPU counted as the bench's. */
async function paced(
  base: string,
  valkey: Valkey,
  bodies: string[],
  o: { seconds: number; connections: number; rate: number; generator: Generator },
): Promise<PhaseResult> {
  const before = await stageTotals(base, valkey);
  const load: PacedLoad = { url: `${base}/v1/rank`, bodies, ...o };
  // oha's CPU is a child's, counted beside this process's; the Node generator's is this process's own.
  const { cpuSeconds = 0, ...r }: PacedResult & { cpuSeconds?: number } =
    o.generator.name === 'oha' ? await ohaLoad(o.generator.bin, load) : await nodeLoad(load);
  const quantile = (xs: number[], q: number) => xs[Math.min(xs.length - 1, Math.floor(q * xs.length))] ?? 0;
  const at = (q: number) => quantile(r.latencies, q);
  return {
    rps: r.latencies.length / r.elapsedSeconds,
    p50: at(0.5),
    p99: at(0.99),
    p999: at(0.999),
    sendLagP99: quantile(r.sendLags, 0.99),
    non2xx: r.non2xx,
    errors: r.errors,
    ...stagesBetween(before, await stageTotals(base, valkey), cpuSeconds),
  };
}

/** bench/paced-load.ts in a worker thread (its own heap: this process's GC does not pause its clock). */
async function nodeLoad(load: PacedLoad): Promise<PacedResult> {
  // tsx's loader, registered inside the worker (a worker does not inherit it).
  const file = JSON.stringify(new URL('./paced-load.ts', import.meta.url).href);
  const worker = new Worker(`import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${file}); })`, {
    eval: true,
    workerData: load,
  });
  const r = await new Promise<PacedResult>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  await worker.terminate();
  return r;
}

/**
 * Valkey holding a generated log's features, a model trained on it, and request bodies. Only those leave: the log
 * and its training data are let go before the phases, since this process is the load generator and its GC pauses
 * over a large heap would count as server latency.
 */
async function prepare(
  ctx: Parameters<Bench<Options>['run']>[0],
  o: Record<Options, number>,
  ns: string,
  valkey: Valkey,
): Promise<{ registry: ModelRegistry; main: string[]; baseline: string[]; live: LiveWriter }> {
  const features = new FeatureSet(DEFAULT_GROUPS);
  const log = generate({ seed: 11, days: 2, impressionsPerDay: o.impressions / 2 });
  const impressions = log.filter((r) => r.record.kind === 'impression').map((r) => r.record.event as AdImpression);

  ctx.log(`applying ${log.length} events' tiles to Valkey ${SERVERS.valkey} under ${ns}`);
  const store = new ValkeyStore(valkey, {
    features,
    namespace: ns,
    ttlSeconds: 3600,
    retentionMs: 0, // as the stream writes: reads at or after the horizon
  });
  const end = Math.max(...impressions.map((i) => i.event_time));
  await applyLog(store, log, 'bench', end);

  ctx.log('training a model (backfill + train)');
  const registry = new ModelRegistry(mkdtempSync(join(tmpdir(), 'bench-models-')));
  await registry.promote(await trainAndRegister(registry, features, replayRecords(log), 1));

  // Requests for random impressions' users and pages, over distinct ads drawn the way traffic draws them.
  const bodiesOf = (n: number) =>
    Array.from({ length: 256 }, (_, k) => {
      const at = impressions[(k * 7919) % impressions.length] as AdImpression;
      const ads = new Map<string, AdImpression>();
      for (let j = k * 104_729; ads.size < n; j++) {
        const i = impressions[j % impressions.length] as AdImpression;
        ads.set(i.ad_id, i);
      }
      return JSON.stringify(rankBody(`bench-${k}`, at, ads.values(), end + 60_000));
    });
  const live = new LiveWriter(store, impressions, end + 60_000, o['live-rate']);
  return { registry, main: bodiesOf(o.candidates), baseline: bodiesOf(o['baseline-candidates']), live };
}

export const rankBench: Bench<Options> = {
  name: 'rank',
  description: 'POST /v1/rank (tributary serve) over local Valkey: fixed rate and saturation, vs fewer candidates',
  options: {
    impressions: 40_000,
    candidates: 100,
    'baseline-candidates': 10,
    rate: 1000,
    seconds: 10,
    connections: 16,
    'timeout-ms': 1000,
    'live-rate': 1000,
    workers: 2,
    // 1: the paced phases use the Node generator even where oha is installed.
    'node-generator': 0,
  },
  async run(ctx) {
    const o = ctx.options;
    const ns = `bench-rank-${Date.now()}.`;
    const valkey = new Valkey(SERVERS.valkey, { enableAutoPipelining: true });
    const { registry, main, baseline, live } = await prepare(ctx, o, ns, valkey);
    const oha = o['node-generator'] ? undefined : findOha();
    const generator: Generator = oha ? { name: 'oha', bin: oha } : { name: 'node' };
    ctx.log(
      oha
        ? `paced load: oha (${oha})`
        : 'paced load: the Node generator (bench/paced-load.ts; scripts/tools/oha.sh installs oha)',
    );
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    // biome-ignore format: one argument per flag reads best
    const args = ['--import', 'tsx', join(import.meta.dirname, '../src/cli/main.ts'), 'serve',
      '--valkey', SERVERS.valkey, '--namespace', ns, '--models', registry.dir, '--port', String(port),
      '--rank-timeout', String(o['timeout-ms']), '--max-candidates', '1000', '--workers', String(o.workers)];
    // `--cpu-prof DIR`: the server's processes (its workers inherit the flags) write their profiles there at exit.
    if (ctx.profileDir) args.unshift('--cpu-prof', '--cpu-prof-dir', ctx.profileDir);
    const server: ChildProcess = spawn(process.execPath, args, {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, TRIBUTARY_LOG_LEVEL: 'warn' },
    });
    try {
      await untilReady(base, server, 'tributary serve');
      ctx.log(`live writes: ${o['live-rate']} impressions/s, ${LATE_SHARE * 100}% a minute late`);
      live.start();
      ctx.log('warming up');
      await phase(base, valkey, main, { seconds: 2, connections: 4 });

      // One connection: each request alone (latency and stage times without queueing); then a fixed rate; then
      // as fast as it goes.
      const phases = {
        alone: { connections: 1 },
        rate: { connections: Math.max(o.connections, 32), rate: o.rate, generator },
        max: { connections: o.connections },
      };
      type PhaseKey = keyof typeof phases;
      const results: Record<string, PhaseResult> = {};
      for (const [variant, bodies, n] of [
        ['baseline', baseline, o['baseline-candidates']],
        ['main', main, o.candidates],
      ] as const) {
        for (const [key, p] of Object.entries(phases)) {
          ctx.log(`${n} candidates, ${key}: ${JSON.stringify(p)} for ${o.seconds}s`);
          results[`${variant}-${key}`] = await phase(base, valkey, bodies, { seconds: o.seconds, ...p });
        }
      }
      // The floor: the same paced load on a server that only parses each body and lists its candidates back.
      ctx.log(`${o.candidates} candidates, rate, stub server (parse + answer only): for ${o.seconds}s`);
      results['stub-rate'] = await withStub(o.workers, async (stub) => {
        await phase(stub, valkey, main, { seconds: 2, connections: 4 }); // warming up, as the server was
        return phase(stub, valkey, main, { seconds: o.seconds, ...phases.rate });
      });
      // The floor with a ranking's I/O: the same, plus one read of the request's user entities and one model run.
      ctx.log(
        `${o.candidates} candidates, rate, stub server with a ranking's I/O (Valkey read, ONNX run): for ${o.seconds}s`,
      );
      await withStub(
        o.workers,
        async (stub) => {
          await phase(stub, valkey, main, { seconds: 2, connections: 4 });
          results['io-stub-rate'] = await phase(stub, valkey, main, { seconds: o.seconds, ...phases.rate });
          // As fast as it goes: the most rankings/s any ranking over this store and model could reach here.
          results['io-stub-max'] = await phase(stub, valkey, main, { seconds: o.seconds, ...phases.max });
        },
        ['--io', SERVERS.valkey, ns, registry.dir],
      );
      const suffix: Record<PhaseKey, string> = {
        alone: 'alone',
        rate: `@${o.rate}/s (${generator.name})`,
        max: 'saturated',
      };
      const result = (key: string) => results[key] as PhaseResult;
      const METRICS: Record<string, (p: PhaseResult) => number> = {
        'req/s': (p) => p.rps,
        'p50 ms': (p) => p.p50,
        'p99 ms': (p) => p.p99,
        'p99.9 ms': (p) => p.p999,
        'generator lag p99 ms': (p) => p.sendLagP99 ?? 0,
        'server CPU ms/req': (p) => p.cpuMs.server,
        'server GC ms/req': (p) => p.gcMs,
        'Valkey CPU ms/req': (p) => p.cpuMs.valkey,
        'load + live writes CPU ms/req': (p) => p.cpuMs.bench,
        'Valkey ms/req': (p) => p.stageMs.valkey,
        'assembly ms/req': (p) => p.stageMs.assembly,
        'ONNX ms/req': (p) => p.stageMs.onnx,
        'defaulted rankings': (p) => p.defaulted,
        'read-cache hit share': (p) => p.cacheHitShare,
        'read-cache invalidations': (p) => p.invalidations,
        'non-2xx + errors': (p) => p.non2xx + p.errors,
      };
      /** Rows of one benchmark label: each metric of phase `value` beside the same metric of phase `baseline`. */
      const compare = (benchmark: string, key: PhaseKey, value: string, baseline: string, metrics: string[]): Row[] =>
        metrics.map((metric) => ({
          benchmark,
          metric: `${metric} ${suffix[key]}`,
          value: (METRICS[metric] as (p: PhaseResult) => number)(result(value)),
          baseline: (METRICS[metric] as (p: PhaseResult) => number)(result(baseline)),
        }));
      const label = `rank ${o.candidates} cand (baseline ${o['baseline-candidates']})`;
      const rank = `rank ${o.candidates} cand`;
      const withIo = "stub server with a ranking's I/O";
      const rows: Row[] = [
        ...(Object.keys(phases) as PhaseKey[]).flatMap((key) =>
          compare(
            label,
            key,
            `main-${key}`,
            `baseline-${key}`,
            Object.keys(METRICS).filter((m) => key === 'rate' || m !== 'generator lag p99 ms'),
          ),
        ),
        ...compare(`${rank} (baseline: stub server)`, 'rate', 'main-rate', 'stub-rate', [
          'req/s',
          'p50 ms',
          'p99 ms',
          'p99.9 ms',
          'generator lag p99 ms',
          'server CPU ms/req',
          'load + live writes CPU ms/req',
        ]),
        ...compare(`${rank} (baseline: ${withIo})`, 'rate', 'main-rate', 'io-stub-rate', [
          'p50 ms',
          'p99 ms',
          'p99.9 ms',
          'server CPU ms/req',
          'Valkey CPU ms/req',
        ]),
        ...compare(`${rank} (baseline: ${withIo})`, 'max', 'main-max', 'io-stub-max', ['req/s', 'server CPU ms/req']),
        ...compare(`${withIo} (baseline: plain stub server)`, 'rate', 'io-stub-rate', 'stub-rate', [
          'p99 ms',
          'server CPU ms/req',
        ]),
      ];
      return { rows, details: { namespace: ns, generator: generator.name, results } };
    } finally {
      ctx.log(`live writes: ${live.stop()} impressions written`);
      server.kill('SIGTERM');
      const keys: string[] = [];
      const stream = valkey.scanStream({ match: `${ns}*`, count: 1000 });
      for await (const batch of stream) keys.push(...(batch as string[]));
      for (let i = 0; i < keys.length; i += 1000) await valkey.unlink(...keys.slice(i, i + 1000));
      valkey.disconnect();
      rmSync(registry.dir, { recursive: true, force: true });
    }
  },
};
