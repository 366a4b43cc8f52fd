// `serve --workers N`: N processes share the port (node:cluster), each with its own Valkey connections, read cache
// and ONNX session. A ranking of 100 candidates costs about a millisecond of one core, so one process tops out
// near 1,000 requests/s whatever the machine has. /metrics on any worker answers for all of them: the worker asks
// the primary, which gathers every worker's registry (prom-client's AggregatorRegistry sums counters, histograms
// and CPU; gauges by their `aggregator`).
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import { AggregatorRegistry, type Registry } from 'prom-client';

const METRICS = 'tributary:metrics';

/**
 * Workers' young generation, MB per semi-space (V8's default is 16): a ranking allocates ≈ 370 KB that is garbage
 * by its end, and a scavenge costs what is still live, not what is dead, so fewer scavenges cost less. The rank
 * bench measured GC per 100-candidate ranking 0.14 → 0.06 ms. A flag given to the command wins.
 */
const SEMI_SPACE_MB = 64;

interface MetricsMessage {
  type: typeof METRICS;
  id: number;
  text?: string;
  error?: string;
}

const isMetricsMessage = (m: unknown): m is MetricsMessage =>
  typeof m === 'object' && m !== null && (m as MetricsMessage).type === METRICS;

/** Whether this process is a worker started by `runPrimary` (cluster mode). */
export const isWorker = (): boolean => cluster.isWorker;

/** This worker's number, 1..N (0 outside cluster mode): names its own files. */
export const workerNumber = (): number => (cluster.isWorker ? Number(process.env.TRIBUTARY_WORKER) : 0);

/**
 * The primary: starts `workers` copies of this command, replaces one that dies once serving, answers their
 * requests for the cluster's metrics, and on SIGINT/SIGTERM stops them all and resolves once every one has
 * exited. A worker that exits before it listens (a bad setting, a model it cannot load) stops them all: restarting
 * it would fail the same way.
 */
export async function runPrimary(workers: number, log: Logger): Promise<void> {
  const aggregator = new AggregatorRegistry();
  let stopping = false;
  let stop: (failure?: Error) => void = () => {};
  const fork = (n: number) => {
    const worker = cluster.fork({ TRIBUTARY_WORKER: String(n) });
    worker.on('message', (m: unknown) => {
      if (!isMetricsMessage(m)) return;
      aggregator.clusterMetrics().then(
        (text) => worker.send({ type: METRICS, id: m.id, text } satisfies MetricsMessage),
        (err: Error) => worker.send({ type: METRICS, id: m.id, error: err.message } satisfies MetricsMessage),
      );
    });
    let listening = false;
    worker.once('listening', () => {
      listening = true;
    });
    worker.on('exit', (code, signal) => {
      if (stopping) return;
      if (!listening) return stop(new Error(`serve worker ${n} exited (code ${code}) before it listened`));
      log.error({ worker: n, code, signal }, 'serve worker died; starting another');
      fork(n);
    });
  };
  const done = new Promise<void>((resolve, reject) => {
    stop = (failure?: Error) => {
      if (stopping) return;
      stopping = true;
      const finish = () => (failure ? reject(failure) : resolve());
      const alive = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && !w.isDead());
      let left = alive.length;
      if (left === 0) finish();
      for (const w of alive) {
        w.once('exit', () => {
          if (--left === 0) finish();
        });
        w.process.kill('SIGTERM');
      }
    };
    process.once('SIGINT', () => stop());
    process.once('SIGTERM', () => stop());
  });
  const given = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some((a) => a.includes('--max-semi-space-size'));
  cluster.setupPrimary({
    execArgv: given ? process.execArgv : [...process.execArgv, `--max-semi-space-size=${SEMI_SPACE_MB}`],
  });
  for (let n = 1; n <= workers; n++) fork(n);
  log.info({ workers }, 'serve workers started');
  await done;
}

/** In a worker, once it has stopped serving: lets the process exit (the primary's channel keeps it alive). */
export function leaveCluster(): void {
  if (cluster.isWorker && process.connected) process.disconnect();
}

/**
 * In a worker: the exposition text of every worker's metrics, from the primary. `registry` is what this worker
 * hands the primary when it gathers (prom-client answers for the registries set here).
 */
export function clusterMetrics(registry: Registry): () => Promise<string> {
  AggregatorRegistry.setRegistries([registry]);
  new AggregatorRegistry(); // in a worker, its constructor is what starts answering the primary
  const waiting = new Map<number, { resolve: (text: string) => void; reject: (err: Error) => void }>();
  let next = 0;
  process.on('message', (m: unknown) => {
    if (!isMetricsMessage(m)) return;
    const w = waiting.get(m.id);
    waiting.delete(m.id);
    if (m.text !== undefined) w?.resolve(m.text);
    else w?.reject(new Error(`cluster metrics: ${m.error}`));
  });
  return () =>
    new Promise<string>((resolve, reject) => {
      const id = next++;
      waiting.set(id, { resolve, reject });
      process.send?.({ type: METRICS, id } satisfies MetricsMessage);
    });
}
