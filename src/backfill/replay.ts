// The backfill's engine: replays history in the order serving saw it through the same admission rule and
// feature definitions as the stream, and reads each impression's vector at its own moment, before anything
// later in the log. State lives in memory; no I/O here.
import type { AdClick, AdImpression } from '../events/types.ts';
import { Admission, type Verdict } from '../features/admission.ts';
import type { FeatureSet } from '../features/compile.ts';
import type { Source } from '../features/define.ts';
import { TileRings } from '../features/tile-rings.ts';
import { MemoryStore } from '../online/memory-store.ts';

/**
 * One record of the log. A source that dictionary-encodes its key fields (the column file) also hands their
 * ids: `ids[idsAt + k]` is the id of KEY_FIELDS[k], dense from 0 per field, one dictionary for the whole source
 * (every record of a replay carries ids, or none does). The replay then looks up no key strings.
 */
export type ReplayRecord = (
  | { source: 'impression'; partition: string; event: AdImpression }
  | { source: 'click'; partition: string; event: AdClick }
) & { ids?: Int32Array; idsAt?: number };

/** Feature state a replay reads (into `out`, when given) and then updates with one admitted event. */
interface ReplayState {
  step(source: Source, e: AdImpression | AdClick, out: Float64Array | null, ids?: Int32Array, idsAt?: number): void;
}

/**
 * The reference state: the in-process online store read through FeatureSet.plan/assemble, as serving reads it.
 * ~200× slower than the tile rings; kept as the baseline they are tested and benchmarked against.
 */
class MemoryState implements ReplayState {
  readonly store: MemoryStore;
  constructor(private readonly features: FeatureSet) {
    this.store = new MemoryStore(features);
  }

  step(source: Source, e: AdImpression | AdClick, out: Float64Array | null): void {
    if (out) {
      const plan = this.features.plan([e], e.event_time);
      out.set(this.features.assemble(plan, this.store.readSync(plan.requests))[0] as Float64Array);
    }
    this.features.apply(source, e, this.store);
  }
}

export type ReplayStateKind = 'rings' | 'memory';

export class Replay {
  private readonly admissions = new Map<string, Admission>();
  /** The last record's partition and its admission: consecutive records mostly share it. */
  private lastPartition = '';
  private lastAdmission: Admission | undefined;
  private readonly state: ReplayState;
  private readonly partitions: number;
  private readonly vector: Float64Array;
  readonly counts: Record<Verdict, number> = { applied: 0, late: 0, duplicate: 0 };

  constructor(
    readonly features: FeatureSet,
    readonly allowedLatenessMs: number,
    options: {
      state?: ReplayStateKind;
      /**
       * How many partitions the log holds: once each has been seen, tiles older than every partition's watermark
       * by a whole window are dropped. Left out, none is ever dropped: exact for any log, but the state then grows
       * with the span of the history (a partition may start far behind the others).
       */
      partitions?: number;
    } = {},
  ) {
    this.partitions = options.partitions ?? Number.POSITIVE_INFINITY;
    this.vector = new Float64Array(features.names.length);
    this.state =
      options.state === 'memory'
        ? new MemoryState(features)
        : new TileRings(features, allowedLatenessMs, () => this.lowWatermark());
  }

  /** The reference state's store (state 'memory'): readable at any moment for any entity, e.g. by tests. */
  get store(): MemoryStore | undefined {
    return this.state instanceof MemoryState ? this.state.store : undefined;
  }

  /** The lowest watermark over partitions: no later record of a known partition is older. */
  private lowWatermark(): number {
    if (this.admissions.size < this.partitions) return Number.NEGATIVE_INFINITY;
    let low = Number.POSITIVE_INFINITY;
    for (const a of this.admissions.values()) low = Math.min(low, a.watermark);
    return low;
  }

  /**
   * Applies one record; for an applied impression returns its feature vector as of this point in the log, read
   * at the impression's event time. The vector is a buffer reused by the next call: copy what you keep.
   */
  apply(r: ReplayRecord): Float64Array | null {
    let admission = this.lastAdmission;
    if (r.partition !== this.lastPartition || admission === undefined) {
      admission = this.admissions.get(r.partition);
      if (admission === undefined) {
        admission = new Admission(this.allowedLatenessMs, undefined, false);
        this.admissions.set(r.partition, admission);
      }
      this.lastPartition = r.partition;
      this.lastAdmission = admission;
    }
    const verdict = admission.admit(r.event.event_id, r.event.event_time);
    this.counts[verdict]++;
    if (verdict !== 'applied') return null;
    const out = r.source === 'impression' ? this.vector : null;
    this.state.step(r.source, r.event, out, r.ids, r.idsAt);
    return out;
  }
}
