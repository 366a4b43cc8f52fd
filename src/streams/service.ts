// `tributary stream`: a consumer-group member that turns ad_impressions and ad_clicks into online (Valkey or
// in-process) and offline (ClickHouse) feature state, exactly once in effect (see checkpoint.ts for the protocol).
// The same service runs over Kafka or the embedded file log (event-log.ts).
import type { Logger } from 'pino';
import { deadLetterTopic } from '../events/catalog.ts';
import type { EventSerde } from '../events/serde.ts';
import { Admission } from '../features/admission.ts';
import type { FeatureSet } from '../features/compile.ts';
import type { Source } from '../features/define.ts';
import { type OfflineBatch, tileRowsOf } from '../offline/sink.ts';
import type { PartReader, TileWriter } from '../online/contract.ts';
import type { CheckpointStore, Intent } from './checkpoint.ts';
import { DEFAULT_DEAD_LETTER_BYTES, packDeadLetters } from './dead-letters.ts';
import type { EventLog, LogBatchPayload, LogConsumer, LogProducer, OutMessage } from './event-log.ts';
import { PermanentSinkError, permanentFailure, producerOutOfStep, tooLarge } from './failures.ts';
import { reasonClass, type StreamMetrics } from './metrics.ts';
import {
  type BatchOutcome,
  type DeadLetter,
  deadLetterMessage,
  type LogMessage,
  processBatch,
  sourceTopics,
} from './processor.ts';
import { partitionProgress } from './progress.ts';

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
  /** How far an event time may run ahead of its message's log timestamp before it is dead-lettered as future. */
  maxClockSkewMs?: number;
  /** Largest dead-letter produce request, in bytes (under the topic's max.message.bytes). */
  deadLetterBytes?: number;
  /** Whether this group sends the dead letters (default true); a second group over the same log only counts them. */
  sendDeadLetters?: boolean;
}

export interface StreamDeps {
  eventLog: EventLog;
  serde: EventSerde;
  features: FeatureSet;
  /**
   * The online store; unset for a group that writes only the offline store (run beside one that writes the online
   * store, so that ClickHouse never holds up the online features: each group checkpoints on its own).
   */
  online?: TileWriter;
  offline?: OfflineWriter;
  /** Record the vector each applied impression would have been served, read from here (for parity checks). */
  served?: PartReader;
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
  /** Whether the checkpoint store has been told this process took the partition over (CheckpointStore.adopt). */
  adopted: boolean;
}

/** How often the group's slowest partition (the prune horizon) is looked up, at most. */
const HORIZON_EVERY_MS = 2000;

/** What became of the messages this process committed, by verdict; their sum is `processed`. */
export type Counts = BatchOutcome['counts'];

export class StreamService {
  private readonly consumer: LogConsumer;
  private producer: LogProducer;
  private readonly states = new Map<string, PartitionState>();
  private readonly sources: Map<string, Source>;
  /** Messages whose batch has been committed (applied, dead-lettered or counted as duplicates). */
  processed = 0;
  readonly counts: Counts = { applied: 0, late: 0, duplicate: 0, invalid: 0 };
  /** Set by stop() or a permanent failure: retries and batches end at once. */
  private stopping = false;
  private pause = new AbortController();
  /** Settles with the permanent failure that stopped the stream (never, for a stream that is only stopped). */
  readonly failed: Promise<PermanentSinkError>;
  private fail!: (err: PermanentSinkError) => void;
  private failure?: PermanentSinkError;
  /** Source partitions of the group (non-empty ones), and the event time below which none writes any more. */
  private partitions?: { ids: string[]; at: number };
  private horizonCache?: { time?: number; at: number };
  private deadLetterBytes: number;

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
    this.deadLetterBytes = options.deadLetterBytes ?? DEFAULT_DEAD_LETTER_BYTES;
    deps.metrics.followProgress(() => partitionProgress(deps.eventLog, deps.checkpoints, [...this.sources.keys()]));
    this.failed = new Promise((resolve) => {
      this.fail = (err) => {
        if (this.stopping) return;
        this.failure = err;
        this.stopping = true;
        this.pause.abort();
        resolve(err);
      };
    });
  }

  async start(): Promise<void> {
    // A service stopped by stop() may start again (resuming from its checkpoints); one that failed may not.
    if (this.failure) throw this.failure;
    this.stopping = false;
    this.pause = new AbortController();
    await this.producer.connect();
    // Dead-letter requests sized to what the topic takes from the start: a refused request would cost a new
    // producer session (an idempotent producer's sequence moves past it).
    const limit = await this.deps.eventLog
      .maxMessageBytes?.(deadLetterTopic(this.options.namespace))
      .catch(() => undefined);
    if (limit !== undefined) this.deadLetterBytes = Math.min(this.deadLetterBytes, Math.floor(limit * 0.95));
    // Partitions move on rebalance: forget their state, reload it from the checkpoint when they come back.
    await this.consumer.start(
      [...this.sources.keys()],
      (payload) => this.onBatch(payload),
      () => this.states.clear(),
    );
  }

  /** Ends retries and pauses at once, lets the batch in hand return, and leaves the group. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.pause.abort();
    await this.consumer.disconnect();
    await this.producer.disconnect();
  }

  /** Waits `ms`, or less when the stream stops meanwhile. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.pause.signal.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        this.pause.signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.pause.signal.addEventListener('abort', done);
    });
  }

  private async state(id: string): Promise<PartitionState> {
    let st = this.states.get(id);
    if (!st) {
      const cp = await this.deps.checkpoints.load(id);
      // Another member may have written from this partition since this process last did.
      this.deps.online?.forget(id);
      st = {
        admission: Admission.restore(cp?.admission, this.options.allowedLatenessMs),
        next: cp?.next,
        intent: cp?.intent,
        seeked: false,
        adopted: false,
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
    if (this.stopping) return;
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
    const attempt = <T>(sink: string, write: () => Promise<T>) => this.retry(sink, id, write, heartbeat, isRunning);
    if (!st.adopted) {
      const intent = st.intent;
      const adopted = await attempt('checkpoint', () => this.deps.checkpoints.adopt(id, intent).then(() => true));
      if (adopted === undefined) return;
      st.adopted = true;
    }
    while (messages.length > 0 && isRunning() && !isStale() && !this.stopping) {
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
      // Served vectors read the online state as of every earlier batch: the batches begun before this one (a crashed
      // member's, replayed by whoever holds their partitions now) finish first, and while any is in flight no new
      // batch is begun (that would number itself between them). The partition is fetched again meanwhile.
      if (this.deps.served && !st.intent && !(await this.earlierBatchesDone(id, undefined, heartbeat))) {
        this.consumer.seek(topic, partition, Number(chunk[0]?.offset));
        return;
      }
      if (!st.intent) {
        const [start, end] = [Number(chunk[0]?.offset), Number(chunk[chunk.length - 1]?.offset)];
        const seq = await attempt('checkpoint', () => this.deps.checkpoints.begin(id, start, end));
        if (seq == null) return;
        st.intent = { start, end, seq };
      }
      if (this.deps.served && !(await this.earlierBatchesDone(id, st.intent.seq, heartbeat))) {
        this.consumer.seek(topic, partition, st.intent.start);
        return;
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
          { served: this.deps.served, maxClockSkewMs: this.options.maxClockSkewMs, recordEvents: !!this.deps.offline },
        );
      } catch (err) {
        // Not the data's fault (e.g. the registry is down): start over from the checkpoint after a pause.
        this.deps.log.warn({ err, partition: id }, 'batch failed before any write; retrying from the checkpoint');
        this.states.delete(id);
        await this.sleep(1000);
        this.consumer.seek(topic, partition, st.next ?? first);
        return;
      }
      const batchId = `${id}/${outcome.firstOffset}-${outcome.lastOffset}`;
      // Served vectors first, alone: once they are stored, a replay of this batch (after a crash at any later
      // point, when the online store may hold the batch already) recomputes them only for the insert to drop.
      if (outcome.served.length > 0 && this.deps.offline) {
        const offline = this.deps.offline;
        const rows = { impressions: [], clicks: [], tiles: [], served: outcome.served };
        if ((await attempt('clickhouse', () => offline.writeBatch(batchId, rows))) === undefined) return;
      }
      // Each write is idempotent for this exact range (the intent), so the sinks go in parallel: the online store
      // does not wait for ClickHouse. The checkpoint commits only after all of them.
      const online = this.deps.online;
      const horizon = online ? await this.pruneHorizon() : undefined;
      const written = await Promise.all([
        this.options.sendDeadLetters === false
          ? null
          : attempt('dead-letter', this.deadLetter(id, outcome.deadLetters)),
        attempt('clickhouse', () => this.writeOffline(batchId, outcome)),
        online ? attempt('valkey', () => online.applyBatch(outcome.admitted, id, outcome.lastOffset, horizon)) : null,
      ]);
      if (written.includes(undefined)) return;
      const committed = await attempt('checkpoint', () =>
        this.deps.checkpoints.commit(id, outcome.lastOffset + 1, st.admission),
      );
      if (committed === undefined) return;
      st.next = outcome.lastOffset + 1;
      st.intent = undefined;
      this.record(topic, partition, outcome, t0, chunk.length, st.admission.watermark);
      resolveOffset(String(outcome.lastOffset));
      await commitOffsetsIfNecessary();
      await heartbeat();
    }
  }

  /**
   * True once no batch of the group begun before `seq` (none at all, without one) is in flight; false after a short
   * wait (or a stop).
   */
  private async earlierBatchesDone(id: string, seq: number | undefined, heartbeat: () => Promise<void>) {
    const pending = await this.retry('checkpoint', id, () => this.deps.checkpoints.pendingBefore(seq), heartbeat);
    if (pending == null) return false;
    // Its own mark is never one to wait for: the batch in hand replaces it (one left when the log lost its range).
    const waiting = pending.filter((p) => p !== id);
    if (waiting.length === 0) return true;
    this.deps.log.debug({ partition: id, seq, waiting_for: waiting }, 'waiting for earlier batches');
    await this.sleep(50);
    await heartbeat().catch(() => undefined);
    return false;
  }

  /**
   * The event time below which no partition of the group writes or reads any more: the slowest partition's
   * watermark (its newest committed event time minus the allowed lateness). The online store prunes below it.
   */
  private async pruneHorizon(): Promise<number | undefined> {
    const now = Date.now();
    // Unknown (no partition has committed yet, as at a start) is asked again sooner: until it is known nothing is
    // pruned, and the state keeps every tile.
    const every = this.horizonCache?.time === undefined ? HORIZON_EVERY_MS / 10 : HORIZON_EVERY_MS;
    if (this.horizonCache && now - this.horizonCache.at < every) return this.horizonCache.time;
    try {
      if (!this.partitions || now - this.partitions.at > 30 * HORIZON_EVERY_MS) {
        const ids: string[] = [];
        for (const topic of this.sources.keys())
          for (const p of await this.deps.eventLog.endOffsets(topic))
            if (p.offset > 0) ids.push(`${topic}/${p.partition}`);
        this.partitions = { ids, at: now };
      }
      const slowest = await this.deps.checkpoints.slowest(this.partitions.ids);
      const time = slowest === undefined ? undefined : slowest - this.options.allowedLatenessMs;
      this.horizonCache = { time: time !== undefined && Number.isFinite(time) ? time : undefined, at: now };
    } catch (err) {
      // Not knowing the horizon only delays pruning.
      this.deps.log.debug({ err: (err as Error).message }, 'prune horizon unknown');
    }
    return this.horizonCache?.time;
  }

  private record(topic: string, partition: number, o: BatchOutcome, t0: number, n: number, watermark: number): void {
    const m = this.deps.metrics;
    for (const [verdict, count] of Object.entries(o.counts) as [keyof Counts, number][]) {
      this.counts[verdict] += count;
      if (count) m.events.inc({ topic, verdict }, count);
    }
    for (const [verdict, count] of Object.entries(o.replays)) if (count) m.replays.inc({ topic, verdict }, count);
    for (const d of o.deadLetters) m.deadLetters.inc({ topic, reason: reasonClass(d.reason) });
    m.batchSeconds.observe((performance.now() - t0) / 1000);
    // The partition's watermark as committed (a batch's own newest event time would fall back, or to 0 for a batch of
    // dead letters only); none before its first applied event.
    if (Number.isFinite(watermark)) m.watermark.set({ topic, partition }, watermark / 1000);
    this.processed += n;
  }

  private async writeOffline(batchId: string, o: BatchOutcome): Promise<void> {
    if (!this.deps.offline) return;
    await this.deps.offline.writeBatch(batchId, {
      impressions: o.impressions,
      clicks: o.clicks,
      tiles: tileRowsOf(this.deps.features, o.admitted, batchId),
    });
  }

  /**
   * The batch's dead letters, in produce requests the topic accepts (dead-letters.ts). A write to retry: requests
   * already sent are not sent again, and a request the broker finds too large is split further.
   */
  private deadLetter(partitionId: string, all: DeadLetter[]): () => Promise<void> {
    const sentBefore = this.options.deadLettered?.[partitionId] ?? 0;
    const letters = sentBefore > 0 ? all.filter((d) => d.coordinates.offset >= sentBefore) : all;
    const messages: OutMessage[] = letters.map(deadLetterMessage);
    const topic = deadLetterTopic(this.options.namespace);
    let sent = 0;
    return async () => {
      while (sent < messages.length) {
        const [request] = packDeadLetters(messages.slice(sent), this.deadLetterBytes);
        const batch = request as OutMessage[];
        try {
          await this.producer.send([{ topic, messages: batch }]);
        } catch (err) {
          const refused = tooLarge(err);
          if (!(refused && this.deadLetterBytes > 1024) && !producerOutOfStep(err)) throw err;
          if (refused) {
            // The topic takes less than we thought (its max.message.bytes changed): halve the requests.
            this.deadLetterBytes = Math.floor(this.deadLetterBytes / 2);
            this.deps.log.warn({ max_bytes: this.deadLetterBytes }, 'dead-letter request too large; splitting further');
          }
          // Either way the producer's sequence is past the refused request: go on with a new session.
          await this.producer.disconnect().catch(() => undefined);
          this.producer = this.deps.eventLog.producer();
          await this.producer.connect();
          continue;
        }
        sent += batch.length;
      }
    };
  }

  /**
   * Retries a sink write with capped exponential backoff, heartbeating so the group keeps our partitions.
   * Resolves to the write's result (null for none), or undefined when the stream stops meanwhile: on stop(), or
   * on a failure no retry can cure (permanentFailure), which stops the stream and settles `failed`.
   */
  private async retry<T>(
    sink: string,
    partitionId: string,
    write: () => Promise<T>,
    heartbeat: () => Promise<void>,
    isRunning: () => boolean = () => true,
  ): Promise<T | null | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        return (await write()) ?? null;
      } catch (err) {
        const permanent = permanentFailure(err);
        if (permanent) {
          const failure = new PermanentSinkError(sink, partitionId, permanent);
          this.deps.log.error(
            { sink, partition: partitionId, err: permanent },
            'sink write failed permanently; stopping',
          );
          this.fail(failure);
          return undefined;
        }
        this.deps.metrics.sinkRetries.inc({ sink });
        const wait = Math.min(10_000, 200 * 2 ** attempt);
        this.deps.log.warn(
          { sink, attempt, wait_ms: wait, err: (err as Error).message },
          'sink write failed; backing off',
        );
        if (!isRunning() || this.stopping) return undefined;
        await this.sleep(wait);
        if (this.stopping) return undefined;
        await heartbeat().catch(() => undefined);
      }
    }
  }
}
