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

/** A batch in flight: its offsets and its place in the order batches are applied. */
export interface Intent {
  start: number;
  end: number;
  seq: number;
}

export interface CheckpointStore {
  load(partitionId: string): Promise<Checkpoint | undefined>;
  /** Records the batch about to be written and returns its sequence number (increasing across the group). */
  begin(partitionId: string, start: number, end: number): Promise<number>;
  /** Records `next` and the admission state after the batch (its added ids, its watermark) atomically. */
  commit(partitionId: string, next: number, admission: Admission): Promise<void>;
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
    if (h.next === undefined) return undefined;
    const buckets = JSON.parse(h.buckets ?? '[]') as number[];
    const seen: Record<string, string[]> = {};
    const members = await Promise.all(buckets.map((b) => this.client.smembers(`${k}|seen|${b}`)));
    buckets.forEach((b, i) => {
      seen[b] = members[i] as string[];
    });
    const cp: Checkpoint = { next: Number(h.next), admission: { maxEventTime: Number(h.max_event_time), seen } };
    if (h.intent_start !== undefined) {
      cp.intent = { start: Number(h.intent_start), end: Number(h.intent_end), seq: Number(h.intent_seq) };
    }
    return cp;
  }

  async begin(partitionId: string, start: number, end: number): Promise<number> {
    const seq = await this.client.incr(`tb:{seq|${this.group}}`);
    await this.client.hset(this.key(partitionId), { intent_start: start, intent_end: end, intent_seq: seq });
    return seq;
  }

  async commit(partitionId: string, next: number, admission: Admission): Promise<void> {
    const k = this.key(partitionId);
    const tx = this.client.multi();
    const { added, dropped } = admission.drainChanges();
    for (const [bucket, ids] of added) tx.sadd(`${k}|seen|${bucket}`, ...ids);
    for (const b of dropped) tx.del(`${k}|seen|${b}`);
    tx.hset(k, { next, max_event_time: admission.maxEventTime, buckets: JSON.stringify(admission.buckets()) });
    tx.hdel(k, 'intent_start', 'intent_end', 'intent_seq');
    await tx.exec();
  }
}

/**
 * The embedded default's checkpoints, in process memory beside the in-process online store (MemoryStore): both
 * start empty with the process, so the embedded stream rebuilds them from the log's beginning on each start.
 */
export class MemoryCheckpoints implements CheckpointStore {
  private readonly data = new Map<string, Checkpoint>();
  private seq = 0;

  async load(partitionId: string): Promise<Checkpoint | undefined> {
    const c = this.data.get(partitionId);
    return c && structuredClone(c);
  }

  async begin(partitionId: string, start: number, end: number): Promise<number> {
    const c = this.data.get(partitionId) ?? { next: start, admission: new Admission(0).snapshot() };
    const seq = ++this.seq;
    this.data.set(partitionId, { ...c, intent: { start, end, seq } });
    return seq;
  }

  async commit(partitionId: string, next: number, admission: Admission): Promise<void> {
    admission.drainChanges();
    this.data.set(partitionId, { next, admission: admission.snapshot() });
  }
}
