// The console's sampling: every few seconds it reads the stream's partition progress and every metrics source, and
// keeps the last few minutes of points, so the pages chart series (rates are differences between samples).
import type { Logger } from 'pino';
import type { PartitionProgress } from '../streams/progress.ts';
import {
  buckets,
  byLabel,
  histogramQuantile,
  type MetricsReading,
  type MetricsSource,
  readMetrics,
  total,
} from './metrics-source.ts';

export interface SamplerDeps {
  /** The stream's partition progress; undefined when its checkpoints cannot be read from here (see `noProgress`). */
  progress?: () => Promise<PartitionProgress[]>;
  /** Why there is no progress (shown on the Pipeline page). */
  noProgress?: string;
  metrics: readonly MetricsSource[];
  log: Logger;
}

/** One partition at one sample. */
export interface PartitionPoint extends PartitionProgress {
  /** Offsets the stream advanced per second since the previous sample (null on the first). */
  eventsPerSecond: number | null;
}

/** /v1/rank over one sampling interval (null where the interval saw no request). */
export interface ServingPoint {
  at: number;
  requestsPerSecond: number | null;
  errorsPerSecond: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  /** Share of rankings answered with default features (the store slow or down). */
  defaultShare: number | null;
  /** Mean milliseconds per ranking in each stage. */
  stageMs: Record<string, number | null>;
}

export interface SamplePoint {
  at: number;
  partitions?: PartitionPoint[];
  progressProblem?: string;
  metrics: MetricsReading;
  serving: ServingPoint;
}

const STAGES = ['valkey', 'assembly', 'onnx'] as const;
const RANK = 'tributary_rank_request_seconds';

export class Sampler {
  readonly points: SamplePoint[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly deps: SamplerDeps,
    readonly options: { intervalMs: number; keep: number } = { intervalMs: 2000, keep: 180 },
  ) {}

  get latest(): SamplePoint | undefined {
    return this.points.at(-1);
  }

  start(): void {
    const tick = () => {
      this.running = this.sample()
        .then(() => {})
        .catch((err: Error) => this.deps.log.warn({ err: err.message }, 'console sample failed'))
        .finally(() => {
          if (this.timer) this.timer = setTimeout(tick, this.options.intervalMs);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** Takes one sample now (the timer calls it; tests may too). */
  async sample(): Promise<SamplePoint> {
    const at = Date.now();
    const [progress, metrics] = await Promise.all([this.readProgress(), readMetrics(this.deps.metrics)]);
    const prev = this.latest;
    const point: SamplePoint = { at, metrics, serving: servingPoint(at, metrics, prev) };
    if ('problem' in progress) point.progressProblem = progress.problem;
    else point.partitions = progress.partitions.map((p) => withRate(p, at, prev));
    this.points.push(point);
    if (this.points.length > this.options.keep) this.points.shift();
    return point;
  }

  private async readProgress(): Promise<{ partitions: PartitionProgress[] } | { problem: string }> {
    if (!this.deps.progress) return { problem: this.deps.noProgress ?? 'no stream to read' };
    try {
      return { partitions: await this.deps.progress() };
    } catch (err) {
      return { problem: `reading the stream's progress failed: ${(err as Error).message}` };
    }
  }
}

function withRate(p: PartitionProgress, at: number, prev: SamplePoint | undefined): PartitionPoint {
  const before = prev?.partitions?.find((q) => q.topic === p.topic && q.partition === p.partition);
  const seconds = prev ? (at - prev.at) / 1000 : 0;
  return { ...p, eventsPerSecond: before && seconds > 0 ? Math.max(0, p.next - before.next) / seconds : null };
}

/** What /v1/rank did between the previous sample and this one, from the counters' differences. */
function servingPoint(at: number, now: MetricsReading, prev: SamplePoint | undefined): ServingPoint {
  const point: ServingPoint = {
    at,
    requestsPerSecond: null,
    errorsPerSecond: null,
    p50Ms: null,
    p99Ms: null,
    defaultShare: null,
    stageMs: Object.fromEntries(STAGES.map((s) => [s, null])),
  };
  if (!prev) return point;
  const seconds = (at - prev.at) / 1000;
  const a = prev.metrics.samples;
  const b = now.samples;
  // A counter that went down is a restarted process: its new count is the interval's.
  const delta = (x: number, y: number) => (y >= x ? y - x : y);
  const requests = delta(total(a, `${RANK}_count`), total(b, `${RANK}_count`));
  point.requestsPerSecond = requests / seconds;
  point.errorsPerSecond =
    delta(total(a, `${RANK}_count`, { code: '5xx' }), total(b, `${RANK}_count`, { code: '5xx' })) / seconds;
  if (requests > 0) {
    const before = new Map(buckets(a, RANK));
    const interval = buckets(b, RANK).map(([le, n]) => [le, delta(before.get(le) ?? 0, n)] as [number, number]);
    point.p50Ms = histogramQuantile(0.5, interval) * 1000;
    point.p99Ms = histogramQuantile(0.99, interval) * 1000;
  }
  const ra = byLabel(a, 'tributary_rankings_total', 'features');
  const rb = byLabel(b, 'tributary_rankings_total', 'features');
  const rankings = Object.keys(rb).reduce((n, k) => n + delta(ra[k] ?? 0, rb[k] ?? 0), 0);
  if (rankings > 0) point.defaultShare = delta(ra.defaults ?? 0, rb.defaults ?? 0) / rankings;
  for (const stage of STAGES) {
    const n = delta(
      total(a, 'tributary_rank_stage_seconds_count', { stage }),
      total(b, 'tributary_rank_stage_seconds_count', { stage }),
    );
    const s = delta(
      total(a, 'tributary_rank_stage_seconds_sum', { stage }),
      total(b, 'tributary_rank_stage_seconds_sum', { stage }),
    );
    point.stageMs[stage] = n > 0 ? (1000 * s) / n : null;
  }
  return point;
}
