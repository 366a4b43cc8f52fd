// What the stream service counts; exposed in Prometheus format.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { PartitionProgress } from './progress.ts';

/** A scrape reads the partitions' progress (the log's ends, the checkpoints) at most this often... */
const PROGRESS_EVERY_MS = 1000;
/** ...and waits at most this long for it: a slow store gives the last values read, never a hung scrape. */
const PROGRESS_WAIT_MS = 2000;

export class StreamMetrics {
  readonly registry = new Registry();
  readonly events = new Counter({
    name: 'tributary_stream_events_total',
    help: 'Events read, by topic and what became of them (applied, late, duplicate, invalid)',
    labelNames: ['topic', 'verdict'],
    registers: [this.registry],
  });
  readonly deadLetters = new Counter({
    name: 'tributary_stream_dead_letters_total',
    help: 'Events sent to the dead-letter topic, by reason class',
    labelNames: ['topic', 'reason'],
    registers: [this.registry],
  });
  readonly replays = new Counter({
    name: 'tributary_stream_replayed_events_total',
    help: 'Replayed dead letters read (tributary dead-letters replay), by topic and what became of them',
    labelNames: ['topic', 'verdict'],
    registers: [this.registry],
  });
  readonly batchSeconds = new Histogram({
    name: 'tributary_stream_batch_seconds',
    help: 'Time from fetch to committed checkpoint, per batch',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly sinkRetries = new Counter({
    name: 'tributary_stream_sink_retries_total',
    help: 'Failed sink writes that were retried (Valkey, ClickHouse or Kafka unavailable)',
    labelNames: ['sink'],
    registers: [this.registry],
  });
  readonly watermark = new Gauge({
    name: 'tributary_stream_watermark_seconds',
    help: 'Event-time watermark per partition (epoch seconds)',
    labelNames: ['topic', 'partition'],
    registers: [this.registry],
  });
  // The group's progress, read at scrape time (never on the batch path): every partition of the source topics,
  // whichever instance of the group holds it, so a partition nobody consumes still shows its lag growing.
  readonly lag: Gauge = new Gauge({
    name: 'tributary_stream_consumer_lag',
    help: "Messages in the log not yet processed by the group, per partition (all of the group's partitions)",
    labelNames: ['topic', 'partition'],
    registers: [this.registry],
    collect: () => this.fill(this.lag, (p) => p.lag),
  });
  readonly freshness: Gauge = new Gauge({
    name: 'tributary_stream_freshness_seconds',
    help: 'Now minus the newest event time applied and committed, per partition (the age of the newest data a read sees)',
    labelNames: ['topic', 'partition'],
    registers: [this.registry],
    collect: () => this.fill(this.freshness, (p, now) => p.newestEventTime && (now - p.newestEventTime) / 1000),
  });
  readonly lastCommit: Gauge = new Gauge({
    name: 'tributary_stream_last_commit_timestamp_seconds',
    help: "When the partition's last checkpoint was committed (epoch seconds)",
    labelNames: ['topic', 'partition'],
    registers: [this.registry],
    collect: () => this.fill(this.lastCommit, (p) => p.committedAt && p.committedAt / 1000),
  });

  private progressOf?: () => Promise<readonly PartitionProgress[]>;
  private progress?: readonly PartitionProgress[];
  private progressAt = 0;
  private progressRead?: Promise<void>;

  /** Where the lag, freshness and last-commit gauges read the group's progress (progress.ts's partitionProgress). */
  followProgress(read: () => Promise<readonly PartitionProgress[]>): void {
    this.progressOf = read;
  }

  /** One read shared by the three gauges and by concurrent scrapes; a failed or slow read keeps the last one. */
  private async currentProgress(): Promise<readonly PartitionProgress[] | undefined> {
    const read = this.progressOf;
    if (read && !this.progressRead && Date.now() - this.progressAt >= PROGRESS_EVERY_MS) {
      this.progressAt = Date.now();
      this.progressRead = read()
        .then((p) => {
          this.progress = p;
        })
        .catch(() => undefined)
        .finally(() => {
          this.progressRead = undefined;
        });
    }
    if (this.progressRead) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.progressRead, new Promise((r) => (timer = setTimeout(r, PROGRESS_WAIT_MS)))]);
      clearTimeout(timer);
    }
    return this.progress;
  }

  private async fill(gauge: Gauge, value: (p: PartitionProgress, now: number) => number | undefined): Promise<void> {
    const progress = await this.currentProgress();
    if (!progress) return;
    const now = Date.now();
    // Partitions come and go with topics: only what the last read found is shown.
    gauge.reset();
    for (const p of progress) {
      const v = value(p, now);
      if (v !== undefined) gauge.set({ topic: p.topic, partition: p.partition }, v);
    }
  }
}

/** "late: ..." -> "late"; "unknown schema id 7" -> "unknown schema id": a label with few values. */
export function reasonClass(reason: string): string {
  return reason.split(/[:\d]/, 1)[0]?.trim() || 'other';
}
