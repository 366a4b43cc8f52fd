// Replays the impressions and clicks topics from their earliest offsets up to the end offsets taken when a pass
// starts, decoded with the stream's serde, in the order a stream consuming with no lag would have applied them:
// each partition in offset order, partitions interleaved by Kafka message timestamp (ingest time; ties: the
// impressions topic first, then lower partition).
//
// How this order can differ from what the stream applied, and what that means for parity:
// - The stream applies whole fetched batches, one partition at a time, in fetch order (its `batch_seq`), which
//   depends on lag, batch sizes, rebalances and the number of instances. Per partition the order is the same
//   (offsets), and admission (watermark, dedup) is per partition, so the same events are applied or dead-lettered,
//   and the final feature state is identical (updates commute).
// - What can differ is the vector read at an impression: an event E of another partition whose event time lies in
//   a complete tile before the impression's tile (so inside some window) is seen by the stream iff E's batch was
//   applied before the impression's, and here iff E's timestamp is before the impression's. The two disagree only
//   for E delivered out of order across partitions (ingested after the impression, with an event time in an
//   earlier tile, e.g. jitter across a tile boundary or late delivery) while the stream was behind by more than
//   that gap, or the reverse. A stream that keeps up approximates timestamp order within one fetch.
// - Timestamps are what producers set (CreateTime) unless the topic uses LogAppendTime; a producer that stamps
//   event time instead of send time makes this an event-time order.
// So `--source kafka` gives reproducible rows from the log alone (they do not depend on how the stream batched),
// but parity with the served vectors is exact only with `--source clickhouse`, which replays the stream's own
// apply order (batch_seq, offset) from the offline store.
//
// Reading: a throwaway consumer group that never commits; each partition's read-ahead is bounded (paused when its
// buffer is full, resumed as the merge drains it), so memory stays O(partitions × buffer).
import { randomUUID } from 'node:crypto';
import type { Kafka, KafkaMessage } from 'kafkajs';
import { topicOf } from '../events/catalog.ts';
import { BadEventError, type EventSerde } from '../events/serde.ts';
import type { AdClick, AdImpression } from '../events/types.ts';
import { DEFAULT_MAX_CLOCK_SKEW_MS } from '../events/validate.ts';
import type { Source } from '../features/define.ts';
import { withAdmin } from '../kafka/client.ts';
import { messageTime } from '../streams/processor.ts';
import type { ReplayRecord } from './replay.ts';

export interface BadRecord {
  topic: string;
  partition: number;
  offset: number;
  reason: string;
}

export interface KafkaSourceOptions {
  kafka: Kafka;
  brokers: string[];
  serde: EventSerde;
  namespace: string;
  /** Messages buffered per partition before its fetching pauses. */
  readAhead?: number;
  /** The stream's clock-skew rule (must match the stream's): later events are bad records, as there. */
  maxClockSkewMs?: number;
}

interface PartitionRead {
  source: Source;
  topic: string;
  partition: number;
  /** Stop before this offset: the end offset when the pass started. */
  end: number;
  /** Next offset to take (messages below it were already buffered; a refetch after resume is skipped). */
  next: number;
  queue: KafkaMessage[];
  head: number;
  paused: boolean;
}

export class KafkaSource {
  /** Messages read and records that could not be used, in the last pass. */
  read = 0;
  bad: BadRecord[] = [];

  constructor(private readonly o: KafkaSourceOptions) {}

  /** One pass over the topics; each call re-reads from the earliest offsets. */
  async *open(): AsyncGenerator<ReplayRecord> {
    const { kafka, serde, namespace } = this.o;
    const readAhead = this.o.readAhead ?? 20_000;
    this.read = 0;
    this.bad = [];
    const parts = await this.partitions();
    const pending = parts.filter((p) => p.next < p.end);
    if (pending.length === 0) return;
    const byId = new Map(pending.map((p) => [`${p.topic}/${p.partition}`, p]));
    const groupId = `${namespace}tributary-backfill-${randomUUID()}`;
    // A short fetch wait: a resumed partition is refetched at once instead of after a long poll on the others.
    const consumer = kafka.consumer({ groupId, maxBytesPerPartition: 4 << 20, maxWaitTimeInMs: 50 });
    let wake: (() => void) | undefined;
    let failure: unknown;
    const notify = () => {
      wake?.();
      wake = undefined;
    };
    try {
      await consumer.connect();
      await consumer.subscribe({ topics: [...new Set(pending.map((p) => p.topic))], fromBeginning: true });
      consumer
        .run({
          autoCommit: false,
          eachBatch: async ({ batch }) => {
            const p = byId.get(`${batch.topic}/${batch.partition}`);
            if (!p || p.next >= p.end) return;
            for (const m of batch.messages) {
              const offset = Number(m.offset);
              if (offset >= p.next && offset < p.end) p.queue.push(m);
            }
            p.next = Math.max(p.next, Number(batch.lastOffset()) + 1);
            if (p.next >= p.end || p.queue.length - p.head >= readAhead) {
              p.paused = true;
              consumer.pause([{ topic: p.topic, partitions: [p.partition] }]);
            }
            notify();
          },
        })
        .catch((err) => {
          failure = err;
          notify();
        });

      while (true) {
        // The next record is the earliest head across partitions; a partition still being read but with nothing
        // buffered could hold an earlier one, so wait for it.
        let best: PartitionRead | undefined;
        let waiting = false;
        for (const p of pending) {
          if (p.head === p.queue.length) {
            if (p.next < p.end) waiting = true;
            continue;
          }
          if (!best || Number((p.queue[p.head] as KafkaMessage).timestamp) < Number(best.queue[best.head]?.timestamp))
            best = p;
        }
        if (failure) throw failure;
        if (waiting) {
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          continue;
        }
        if (!best) break;
        const m = best.queue[best.head++] as KafkaMessage;
        if (best.head === best.queue.length) {
          best.queue = [];
          best.head = 0;
        }
        if (best.paused && best.next < best.end && best.queue.length - best.head < readAhead / 2) {
          best.paused = false;
          consumer.resume([{ topic: best.topic, partitions: [best.partition] }]);
        }
        this.read++;
        const partition = `${best.topic}/${best.partition}`;
        try {
          const event = await serde.decode(best.source, m.value, {
            now: messageTime(m),
            maxFutureMs: this.o.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS,
          });
          if (best.source === 'impression') yield { source: 'impression', partition, event: event as AdImpression };
          else yield { source: 'click', partition, event: event as AdClick };
        } catch (err) {
          if (!(err instanceof BadEventError)) throw err; // e.g. registry unreachable: not the record's fault
          this.bad.push({ topic: best.topic, partition: best.partition, offset: Number(m.offset), reason: err.reason });
        }
      }
    } finally {
      await consumer.disconnect().catch(() => undefined);
      await this.deleteGroup(groupId);
    }
  }

  /** Every partition of both topics with its [earliest, end) range at this moment. */
  private partitions(): Promise<PartitionRead[]> {
    const { kafka, brokers, namespace } = this.o;
    return withAdmin(kafka, brokers, async (admin) => {
      const existing = new Set(await admin.listTopics());
      const out: PartitionRead[] = [];
      // Impressions first: on equal timestamps an impression precedes a click (it is what the click is on).
      for (const source of ['impression', 'click'] as const) {
        const topic = topicOf(source, namespace);
        if (!existing.has(topic)) throw new Error(`topic ${topic} does not exist: nothing to replay from Kafka`);
        const offsets = await admin.fetchTopicOffsets(topic);
        offsets.sort((a, b) => a.partition - b.partition);
        for (const o of offsets) {
          out.push({
            source,
            topic,
            partition: o.partition,
            end: Number(o.high),
            next: Number(o.low),
            queue: [],
            head: 0,
            paused: false,
          });
        }
      }
      return out;
    });
  }

  private async deleteGroup(groupId: string): Promise<void> {
    const admin = this.o.kafka.admin();
    try {
      await admin.connect();
      await admin.deleteGroups([groupId]);
    } catch {
      // A leftover empty group with no committed offsets is harmless; Kafka expires it.
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }
}
