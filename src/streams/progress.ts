// How far the stream has got through the log, per partition: the log's end against the last checkpoint. The one
// meaning of "lag" and "freshness" here, read by the stream's metrics and by the console.
import type { CheckpointStore } from './checkpoint.ts';
import type { EventLog } from './event-log.ts';

export interface PartitionProgress {
  topic: string;
  partition: number;
  /** Next offset to be written to the log. */
  end: number;
  /** Next offset the stream will process (0 before its first commit). */
  next: number;
  /** Messages in the log not yet processed. */
  lag: number;
  /** Newest event time applied and committed (epoch ms); undefined before the first commit. */
  newestEventTime?: number;
  /** When the last checkpoint was committed (epoch ms). */
  committedAt?: number;
}

export async function partitionProgress(
  log: EventLog,
  checkpoints: CheckpointStore,
  topics: readonly string[],
): Promise<PartitionProgress[]> {
  const ends = (await Promise.all(topics.map((t) => log.endOffsets(t)))).flatMap((parts, i) =>
    parts.map((p) => ({ topic: topics[i] as string, ...p })),
  );
  const positions = await checkpoints.positions(ends.map((e) => `${e.topic}/${e.partition}`));
  return ends.map((e, i) => {
    const p = positions[i];
    const next = p?.next ?? 0;
    const out: PartitionProgress = {
      topic: e.topic,
      partition: e.partition,
      end: e.offset,
      next,
      lag: e.offset - next,
    };
    // A partition whose batches held no event (all invalid) has no event time yet.
    if (p && Number.isFinite(p.maxEventTime)) out.newestEventTime = p.maxEventTime;
    if (p?.committedAt) out.committedAt = p.committedAt;
    return out;
  });
}
