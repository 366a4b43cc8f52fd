// Where a partition's progress lives: the next offset to process, its admission state (watermark + recent
// event ids), and the range of a batch in flight. Kept in Valkey beside the features it produced (or in process
// memory beside the in-process online store); the log's committed offsets are only advisory (lag monitoring).
//
// Protocol per batch [start, end]: begin(intent) -> write sinks (each idempotent for that exact range) ->
// commit(end + 1). After a crash, a recorded intent makes the restarted consumer reprocess exactly [start, end]
// from the admission state at `start`, so it recomputes the identical batch and the sinks ignore what they have.
import type { Cluster, Redis } from 'iovalkey';
import { Admission, type AdmissionSnapshot } from '../features/admission.ts';

export interface Checkpoint {
  next: number;
  admission: AdmissionSnapshot;
  intent?: Intent;
}

/** Where a partition stands, cheaply (no admission state): for lag, freshness and the console. */
export interface Position {
  next: number;
  /** Newest event time committed (epoch ms). */
  maxEventTime: number;
  /** Wall-clock time of the commit (epoch ms). */
  committedAt: number;
}

/** A batch in flight: its offsets and its place in the order batches are applied. */
export interface Intent {
  start: number;
  end: number;
  seq: number;
}

export interface CheckpointStore {
  load(partitionId: string): Promise<Checkpoint | undefined>;
  /** Called by a partition's new owner with the intent it loaded: what a crashed owner left marked is set straight. */
  adopt(partitionId: string, intent: Intent | undefined): Promise<void>;
  /** Records the batch about to be written and returns its sequence number (increasing across the group). */
  begin(partitionId: string, start: number, end: number): Promise<number>;
  /** Records `next` and the admission state after the batch (its added ids, its watermark) atomically. */
  commit(partitionId: string, next: number, admission: Admission): Promise<void>;
  /**
   * The group's batches begun before `seq` (any, without one) and not committed yet (a crashed member's among them):
   * their partitions. A batch that records served vectors waits for them, so the online state it reads holds every
   * earlier batch whole.
   */
  pendingBefore(seq?: number): Promise<string[]>;
  /**
   * The lowest newest-event-time committed over these partitions: no later event of theirs is older than it minus
   * the allowed lateness. Undefined while any of them has committed nothing.
   */
  slowest(partitionIds: readonly string[]): Promise<number | undefined>;
  /** Each partition's last commit (undefined for one never committed), in the order asked. */
  positions(partitionIds: readonly string[]): Promise<(Position | undefined)[]>;
  /**
   * The highest batch number h such that every batch of the group numbered h or lower has committed (its sink
   * writes are complete) or will never write: a reader of the offline store in (batch_seq, offset) order may go
   * up to h and no row numbered h or lower will appear later. 0 before any batch.
   */
  settledThrough(): Promise<number>;
}

export class ValkeyCheckpoints implements CheckpointStore {
  constructor(
    private readonly client: Redis | Cluster,
    private readonly group: string,
  ) {}

  /** One hash tag per partition: the checkpoint and its dedup sets commit in one MULTI on one slot. */
  private key(partitionId: string): string {
    return `tb:{ckpt|${this.group}|${partitionId}}`;
  }

  async load(partitionId: string): Promise<Checkpoint | undefined> {
    const k = this.key(partitionId);
    const h = await this.client.hgetall(k);
    const intent =
      h.intent_start === undefined
        ? undefined
        : { start: Number(h.intent_start), end: Number(h.intent_end), seq: Number(h.intent_seq) };
    // A partition's first batch, in flight at a crash: replayed from its start like any other (ignoring it left
    // its pending mark for the partition itself to wait on).
    if (h.next === undefined) return intent && { next: intent.start, admission: new Admission(0).snapshot(), intent };
    const buckets = JSON.parse(h.buckets ?? '[]') as number[];
    const seen: Record<string, string[]> = {};
    const members = await Promise.all(buckets.map((b) => this.client.smembers(`${k}|seen|${b}`)));
    buckets.forEach((b, i) => {
      seen[b] = members[i] as string[];
    });
    const cp: Checkpoint = { next: Number(h.next), admission: { maxEventTime: Number(h.max_event_time), seen } };
    if (intent) cp.intent = intent;
    return cp;
  }

  /** The group's batches in flight (member: partition, score: seq), beside the sequence they are numbered from. */
  private get pending(): string {
    return `tb:{seq|${this.group}}|pending`;
  }

  /** Per partition, its newest event time as last committed. */
  private get progress(): string {
    return `tb:{seq|${this.group}}|progress`;
  }

  async adopt(partitionId: string, intent: Intent | undefined): Promise<void> {
    // The mark says a batch of the partition is in flight: true only with an intent (replayed from here on). A mark
    // without one was left by an owner that crashed before recording its intent, or after committing.
    if (intent) await this.client.zadd(this.pending, intent.seq, partitionId);
    else await this.client.zrem(this.pending, partitionId);
  }

  async begin(partitionId: string, start: number, end: number): Promise<number> {
    // Numbered and marked pending in one step (one slot): a batch numbered before another is always seen by it
    // as in flight until committed; the intent (on the partition's slot) follows.
    const seq = Number(
      await this.client.eval(
        "local s = redis.call('INCR', KEYS[1]) redis.call('ZADD', KEYS[2], s, ARGV[1]) return s",
        2,
        `tb:{seq|${this.group}}`,
        this.pending,
        partitionId,
      ),
    );
    await this.client.hset(this.key(partitionId), { intent_start: start, intent_end: end, intent_seq: seq });
    return seq;
  }

  async settledThrough(): Promise<number> {
    // The counter first: every batch numbered up to it was marked pending when numbered (one step), so a batch of
    // those not committed by the time the marks are read is among them.
    const last = Number((await this.client.get(`tb:{seq|${this.group}}`)) ?? 0);
    const [, lowest] = await this.client.zrange(this.pending, 0, 0, 'WITHSCORES');
    return lowest === undefined ? last : Math.min(last, Number(lowest) - 1);
  }

  async pendingBefore(seq?: number): Promise<string[]> {
    // Every mark: one left by a crash is removed when the partition's next owner adopts it.
    return this.client.zrangebyscore(this.pending, '-inf', seq === undefined ? '+inf' : `(${seq}`);
  }

  async slowest(partitionIds: readonly string[]): Promise<number | undefined> {
    if (partitionIds.length === 0) return undefined;
    const times = await this.client.hmget(this.progress, ...partitionIds);
    if (times.some((t) => t === null)) return undefined;
    return Math.min(...times.map(Number));
  }

  async commit(partitionId: string, next: number, admission: Admission): Promise<void> {
    const k = this.key(partitionId);
    const tx = this.client.multi();
    const { added, dropped } = admission.drainChanges();
    for (const [bucket, ids] of added) tx.sadd(`${k}|seen|${bucket}`, ...ids);
    for (const b of dropped) tx.del(`${k}|seen|${b}`);
    tx.hset(k, {
      next,
      max_event_time: admission.maxEventTime,
      buckets: JSON.stringify(admission.buckets()),
      committed_at: Date.now(),
    });
    tx.hdel(k, 'intent_start', 'intent_end', 'intent_seq');
    await tx.exec();
    // Other slots on a Cluster, so not in the transaction: a crash before these leaves a stale mark (ignored) and
    // an older progress (which only prunes later).
    await Promise.all([
      this.client.zrem(this.pending, partitionId),
      this.client.hset(this.progress, partitionId, admission.maxEventTime),
    ]);
  }

  async positions(partitionIds: readonly string[]): Promise<(Position | undefined)[]> {
    return Promise.all(
      partitionIds.map(async (id) => {
        const [next, max, at] = await this.client.hmget(this.key(id), 'next', 'max_event_time', 'committed_at');
        return next === null
          ? undefined
          : { next: Number(next), maxEventTime: Number(max), committedAt: Number(at ?? 0) };
      }),
    );
  }
}

/**
 * The embedded default's checkpoints, in process memory beside the in-process online store (MemoryStore): both
 * start empty with the process, so the embedded stream rebuilds them from the log's beginning on each start.
 */
export class MemoryCheckpoints implements CheckpointStore {
  private readonly data = new Map<string, Checkpoint>();
  private readonly committedAt = new Map<string, number>();
  private seq = 0;

  async load(partitionId: string): Promise<Checkpoint | undefined> {
    const c = this.data.get(partitionId);
    return c && structuredClone(c);
  }

  async adopt(): Promise<void> {}

  async begin(partitionId: string, start: number, end: number): Promise<number> {
    const c = this.data.get(partitionId) ?? { next: start, admission: new Admission(0).snapshot() };
    const seq = ++this.seq;
    this.data.set(partitionId, { ...c, intent: { start, end, seq } });
    return seq;
  }

  async commit(partitionId: string, next: number, admission: Admission): Promise<void> {
    admission.drainChanges();
    this.data.set(partitionId, { next, admission: admission.snapshot() });
    this.committedAt.set(partitionId, Date.now());
  }

  async positions(partitionIds: readonly string[]): Promise<(Position | undefined)[]> {
    return partitionIds.map((id) => {
      const c = this.data.get(id);
      const at = this.committedAt.get(id);
      return c && at !== undefined
        ? { next: c.next, maxEventTime: c.admission.maxEventTime, committedAt: at }
        : undefined;
    });
  }

  async settledThrough(): Promise<number> {
    let settled = this.seq;
    for (const c of this.data.values()) if (c.intent) settled = Math.min(settled, c.intent.seq - 1);
    return settled;
  }

  /** One process, one batch at a time: nothing is ever in flight beside the caller's. */
  async pendingBefore(): Promise<string[]> {
    return [];
  }

  async slowest(partitionIds: readonly string[]): Promise<number | undefined> {
    const times = partitionIds.map((id) => this.data.get(id)?.admission.maxEventTime);
    return times.some((t) => t === undefined) ? undefined : Math.min(...(times as number[]));
  }
}
