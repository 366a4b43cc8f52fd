// `tributary stream`: a consumer-group member that turns ad_impressions and ad_clicks into online (Valkey or
// in-process) and offline (ClickHouse) feature state, exactly once in effect (see checkpoint.ts for the protocol).
// The same service runs over Kafka or the embedded file log (event-log.ts).
import type { Logger } from 'pino';
import { deadLetterTopic } from '../events/catalog.ts';
import type { EventSerde } from '../events/serde.ts';
import { Admission } from '../features/admission.ts';
import type { FeatureSet } from '../features/compile.ts';
import type { Source } from '../features/define.ts';
import type { TileWriter } from '../features/tile-batch.ts';
import { type OfflineBatch, tileRowsOf } from '../offline/sink.ts';
import type { CheckpointStore, Intent } from './checkpoint.ts';
import type { EventLog, LogBatchPayload, LogConsumer, LogProducer } from './event-log.ts';
import { reasonClass, type StreamMetrics } from './metrics.ts';
import {
  type BatchOutcome,
  type DeadLetter,
  deadLetterMessage,
  type LogMessage,
  processBatch,
  sourceTopics,
} from './processor.ts';
import type { RawReader } from './served.ts';

/** The offline store's write side; must ignore a batch id it has already written. */
export interface OfflineWriter {
  writeBatch(batchId: string, rows: OfflineBatch): Promise<void>;
}

export interface StreamOptions {
  namespace: string;
  groupId: string;
  allowedLatenessMs: number;
  /** Upper bound on events per processed batch (bounds latency and memory). */
  maxBatch: number;
  /**
   * Per partition, the offset below which an earlier run already sent the dead letters: a rebuild from the log's
   * beginning (the embedded default) does not send them again.
   */
  deadLettered?: Record<string, number>;
}

export interface StreamDeps {
  eventLog: EventLog;
  serde: EventSerde;
  features: FeatureSet;
  online: TileWriter;
  offline?: OfflineWriter;
  /** Record the vector each applied impression would have been served, read from here (for parity checks). */
  served?: RawReader;
  checkpoints: CheckpointStore;
  metrics: StreamMetrics;
  log: Logger;
}

interface PartitionState {
  admission: Admission;
  /** Next offset to process; undefined before the first batch of a partition never seen. */
  next?: number;
  intent?: Intent;
  seeked: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class StreamService {
  private readonly consumer: LogConsumer;
  private readonly producer: LogProducer;
  private readonly states = new Map<string, PartitionState>();
  private readonly sources: Map<string, Source>;
  /** Messages whose batch has been committed (applied, dead-lettered or counted as duplicates). */
  processed = 0;

  constructor(
    private readonly deps: StreamDeps,
    private readonly options: StreamOptions,
  ) {
    this.consumer = deps.eventLog.consumer(options.groupId);
    this.producer = deps.eventLog.producer();
    const topics = sourceTopics(options.namespace);
    this.sources = new Map([
      [topics.impression, 'impression'],
      [topics.click, 'click'],
    ]);
  }

  async start(): Promise<void> {
    await this.producer.connect();
    // Partitions move on rebalance: forget their state, reload it from the checkpoint when they come back.
    await this.consumer.start(
      [...this.sources.keys()],
      (payload) => this.onBatch(payload),
      () => this.states.clear(),
    );
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect();
    await this.producer.disconnect();
  }

  private async state(id: string): Promise<PartitionState> {
    let st = this.states.get(id);
    if (!st) {
      const cp = await this.deps.checkpoints.load(id);
      st = {
        admission: Admission.restore(cp?.admission, this.options.allowedLatenessMs),
        next: cp?.next,
        intent: cp?.intent,
        seeked: false,
      };
      this.states.set(id, st);
    }
    return st;
  }

  private async onBatch({
    batch,
    resolveOffset,
    heartbeat,
    isRunning,
    isStale,
    commitOffsetsIfNecessary,
  }: LogBatchPayload) {
    const { topic, partition } = batch;
    const id = `${topic}/${partition}`;
    const st = await this.state(id);
    let messages: LogMessage[] = batch.messages;
    const first = Number(messages[0]?.offset);
    this.deps.log.debug(
      { partition: id, first, last: Number(batch.lastOffset()), next: st.next, intent: st.intent },
      'batch fetched',
    );
    if (st.next !== undefined && first > st.next) {
      if (!st.seeked) {
        // The group's advisory offset is ahead of our checkpoint (it can only lag, but be safe): go back.
        st.seeked = true;
        this.consumer.seek(topic, partition, st.next);
        return;
      }
      // Went back and still start later: the log no longer holds [next, first) (retention). Say so and go on.
      this.deps.log.error({ partition: id, missing_from: st.next, missing_to: first - 1 }, 'offsets gone from the log');
      st.next = first;
      st.intent = undefined;
    }
    if (st.next !== undefined && first < st.next) {
      // Already in the checkpoint (the group's offsets lag it): skip, and tell the consumer they are done.
      messages = messages.filter((m) => Number(m.offset) >= (st.next as number));
      resolveOffset(String(st.next - 1));
    }
    while (messages.length > 0 && isRunning() && !isStale()) {
      let take = Math.min(messages.length, this.options.maxBatch);
      if (st.intent) {
        // Replaying a batch that was in flight at a crash: exactly the same range. If this fetch stops short of
        // its end, fetch again from its start (the consumer's position has moved past these messages).
        const { start, end } = st.intent;
        const last = messages.findLastIndex((m) => Number(m.offset) <= end);
        if (Number(messages[messages.length - 1]?.offset) < end) {
          this.consumer.seek(topic, partition, start);
          return;
        }
        take = last + 1;
      }
      const chunk = messages.slice(0, take);
      messages = messages.slice(take);
      const t0 = performance.now();
      if (!st.intent) {
        const [start, end] = [Number(chunk[0]?.offset), Number(chunk[chunk.length - 1]?.offset)];
        const seq = await this.retry(
          'checkpoint',
          () => this.deps.checkpoints.begin(id, start, end),
          heartbeat,
          isRunning,
        );
        if (seq == null) return;
        st.intent = { start, end, seq };
      }
      let outcome: BatchOutcome;
      try {
        const source = this.sources.get(topic) as Source;
        const seq = st.intent.seq;
        outcome = await processBatch(
          source,
          topic,
          partition,
          seq,
          chunk,
          this.deps.features,
          this.deps.serde,
          st.admission,
          this.deps.served,
        );
      } catch (err) {
        // Not the data's fault (e.g. the registry is down): start over from the checkpoint after a pause.
        this.deps.log.warn({ err, partition: id }, 'batch failed before any write; retrying from the checkpoint');
        this.states.delete(id);
        await sleep(1000);
        this.consumer.seek(topic, partition, st.next ?? first);
        return;
      }
      // Each write is idempotent for this exact range (the intent), so the sinks go in parallel: the online store
      // does not wait for ClickHouse. The checkpoint commits only after all of them.
      const attempt = (sink: string, write: () => Promise<unknown>) => this.retry(sink, write, heartbeat, isRunning);
      const written = await Promise.all([
        attempt('dead-letter', () => this.deadLetter(id, outcome.deadLetters)),
        attempt('clickhouse', () => this.writeOffline(id, outcome)),
        attempt('valkey', () =>
          this.deps.online.applyBatch(outcome.tiles, id, outcome.lastOffset, outcome.newestEventTime),
        ),
      ]);
      if (written.includes(undefined)) return;
      if (
        (await attempt('checkpoint', () => this.deps.checkpoints.commit(id, outcome.lastOffset + 1, st.admission))) ===
        undefined
      )
        return;
      st.next = outcome.lastOffset + 1;
      st.intent = undefined;
      resolveOffset(String(outcome.lastOffset));
      await commitOffsetsIfNecessary();
      await heartbeat();
      this.record(topic, partition, outcome, t0, chunk.length);
    }
  }

  private record(topic: string, partition: number, o: BatchOutcome, t0: number, n: number): void {
    const m = this.deps.metrics;
    for (const [verdict, count] of Object.entries(o.counts)) if (count) m.events.inc({ topic, verdict }, count);
    for (const d of o.deadLetters) m.deadLetters.inc({ topic, reason: reasonClass(d.reason) });
    m.batchSeconds.observe((performance.now() - t0) / 1000);
    m.watermark.set({ topic, partition }, o.newestEventTime / 1000);
    this.processed += n;
  }

  private async writeOffline(partitionId: string, o: BatchOutcome): Promise<void> {
    if (!this.deps.offline) return;
    const batchId = `${partitionId}/${o.firstOffset}-${o.lastOffset}`;
    await this.deps.offline.writeBatch(batchId, {
      impressions: o.impressions,
      clicks: o.clicks,
      tiles: tileRowsOf(o.tiles, batchId),
      served: o.served,
    });
  }

  private async deadLetter(partitionId: string, all: DeadLetter[]): Promise<void> {
    const sentBefore = this.options.deadLettered?.[partitionId] ?? 0;
    const letters = sentBefore > 0 ? all.filter((d) => d.coordinates.offset >= sentBefore) : all;
    if (letters.length === 0) return;
    await this.producer.send([
      { topic: deadLetterTopic(this.options.namespace), messages: letters.map(deadLetterMessage) },
    ]);
  }

  /**
   * Retries a sink write with capped exponential backoff, heartbeating so the group keeps our partitions.
   * Resolves to the write's result (null for none), or undefined when the consumer stops meanwhile.
   */
  private async retry<T>(
    sink: string,
    write: () => Promise<T>,
    heartbeat: () => Promise<void>,
    isRunning: () => boolean,
  ): Promise<T | null | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        return (await write()) ?? null;
      } catch (err) {
        this.deps.metrics.sinkRetries.inc({ sink });
        const wait = Math.min(10_000, 200 * 2 ** attempt);
        this.deps.log.warn(
          { sink, attempt, wait_ms: wait, err: (err as Error).message },
          'sink write failed; backing off',
        );
        if (!isRunning()) return undefined;
        await sleep(wait);
        await heartbeat().catch(() => undefined);
      }
    }
  }
}
