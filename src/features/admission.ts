// Which events change feature state: the event-time rule shared by streaming and backfill. Per log partition,
// the watermark is the highest event time seen minus the allowed lateness. An event older than the watermark is
// late (dead-lettered, counted); an event id already admitted is a duplicate (counted once). Decisions depend only
// on the partition's own order, so every replay of the partition decides the same.

import { getOrCreate } from '../util/map.ts';

export type Verdict = 'applied' | 'late' | 'duplicate';

export interface AdmissionSnapshot {
  maxEventTime: number;
  /** Admitted ids by event-time bucket, for buckets the watermark has not passed. */
  seen: Record<string, string[]>;
}

export class Admission {
  maxEventTime = Number.NEGATIVE_INFINITY;
  private readonly seen = new Map<number, Set<string>>();
  /** Changes since the last drainChanges(): what an incremental checkpoint must write. */
  private added = new Map<number, string[]>();
  private dropped: number[] = [];
  /** The bucket limit of the last prune: buckets below it are gone, and admitted events never land below it. */
  private prunedBelow = Number.NEGATIVE_INFINITY;

  constructor(
    readonly allowedLatenessMs: number,
    /** Dedup ids are kept in event-time buckets of this width and dropped once the watermark passes them. */
    readonly bucketMs = Math.max(60_000, Math.floor(allowedLatenessMs / 4)),
    /** Off when nothing calls drainChanges() (the backfill): saves keeping every admitted id twice. */
    readonly trackChanges = true,
  ) {}

  get watermark(): number {
    return this.maxEventTime - this.allowedLatenessMs;
  }

  admit(eventId: string, eventTime: number): Verdict {
    if (eventTime < this.watermark) return 'late';
    const bucket = Math.floor(eventTime / this.bucketMs);
    const ids = getOrCreate(this.seen, bucket, () => new Set<string>());
    if (ids.has(eventId)) return 'duplicate';
    ids.add(eventId);
    if (this.trackChanges) getOrCreate(this.added, bucket, () => [] as string[]).push(eventId);
    if (eventTime > this.maxEventTime) {
      this.maxEventTime = eventTime;
      this.prune();
    }
    return 'applied';
  }

  /** Drops buckets entirely below the watermark: no event there can be admitted again. */
  private prune(): void {
    const limit = Math.floor(this.watermark / this.bucketMs);
    if (limit <= this.prunedBelow) return;
    this.prunedBelow = limit;
    for (const b of this.seen.keys()) {
      if (b >= limit) continue;
      this.seen.delete(b);
      this.added.delete(b);
      this.dropped.push(b);
    }
  }

  buckets(): number[] {
    return [...this.seen.keys()];
  }

  drainChanges(): { added: Map<number, string[]>; dropped: number[] } {
    const changes = { added: this.added, dropped: this.dropped };
    this.added = new Map();
    this.dropped = [];
    return changes;
  }

  snapshot(): AdmissionSnapshot {
    const seen: Record<string, string[]> = {};
    for (const [b, ids] of this.seen) seen[b] = [...ids];
    return { maxEventTime: this.maxEventTime, seen };
  }

  static restore(s: AdmissionSnapshot | undefined, allowedLatenessMs: number): Admission {
    const a = new Admission(allowedLatenessMs);
    if (!s) return a;
    a.maxEventTime = s.maxEventTime;
    for (const [b, ids] of Object.entries(s.seen)) a.seen.set(Number(b), new Set(ids));
    a.prune();
    return a;
  }
}
