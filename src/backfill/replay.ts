// The backfill's engine: replays history in the order serving saw it through the same admission rule and
// feature definitions as the stream, and reads each impression's vector at its own moment, before anything
// later in the log. State lives in memory; no I/O here.
import type { AdClick, AdImpression } from '../events/types.ts';
import { Admission, type Verdict } from '../features/admission.ts';
import type { FeatureSet } from '../features/compile.ts';
import { type StepChunk, TileRings } from '../features/tile-rings.ts';

/**
 * One record of the log. A source that dictionary-encodes its key fields (the column file) also hands their
 * ids: `ids[idsAt + k]` is the id of KEY_FIELDS[k], dense from 0 per field, one dictionary for the whole source
 * (every record of a replay carries ids, or none does). The replay then looks up no key strings. A source that knows
 * where the stream applied a record (the offline store) gives its batch_seq and offset.
 */
export type ReplayRecord = (
  | { source: 'impression'; partition: string; event: AdImpression }
  | { source: 'click'; partition: string; event: AdClick }
) & { ids?: Int32Array; idsAt?: number; batchSeq?: number; offset?: number };

/**
 * Feature state a replay reads (impressions' vectors into `out`) and then updates with each admitted event: the
 * engine's tile rings; tests give a reference of their own.
 */
export interface ReplayState {
  stepChunk(c: StepChunk, out: Float64Array): void;
}

/**
 * What applyChunk returns: record i's vector is vectors[i * F, (i + 1) * F) (F features) when emitted[i] is 1 (an
 * applied impression). Buffers reused by the next call: copy what you keep.
 */
export interface ReplayChunk {
  readonly vectors: Float64Array;
  readonly emitted: Uint8Array;
}

/** Records per applyChunk call for streaming callers: enough to amortise a chunk's passes, small enough to stay in
 * cache (its vectors: 4096 × 58 doubles ≈ 1.9 MB). */
const REPLAY_CHUNK = 4096;

/**
 * Records in log order, REPLAY_CHUNK at a time, as applyChunk takes them: what every streaming caller replays
 * through. An array is sliced (no await per record: its replay measures the engine, not promises).
 */
export async function* inChunks(
  records: readonly ReplayRecord[] | AsyncIterable<ReplayRecord>,
): AsyncGenerator<ReplayRecord[]> {
  if (Array.isArray(records)) {
    for (let i = 0; i < records.length; i += REPLAY_CHUNK) yield records.slice(i, i + REPLAY_CHUNK);
    return;
  }
  let chunk: ReplayRecord[] = [];
  for await (const r of records as AsyncIterable<ReplayRecord>) {
    chunk.push(r);
    if (chunk.length === REPLAY_CHUNK) {
      yield chunk;
      chunk = [];
    }
  }
  if (chunk.length > 0) yield chunk;
}

export class Replay {
  private readonly admissions = new Map<string, Admission>();
  /** The last record's partition and its admission: consecutive records mostly share it. */
  private lastPartition = '';
  private lastAdmission: Admission | undefined;
  private readonly state: ReplayState;
  private readonly partitions: number;
  /** lowWatermark() as of the last admitted record (it changes only when a watermark does). */
  private low = Number.NEGATIVE_INFINITY;
  private readonly chunk: StepChunk = {
    length: 0,
    events: [],
    time: new Float64Array(0),
    sources: [],
    keyIds: [],
    keyIdsAt: new Int32Array(0),
    lowWatermark: new Float64Array(0),
    row: new Int32Array(0),
  };
  private vectors = new Float64Array(0);
  private emitted = new Uint8Array(0);
  /** apply()'s chunk of one, and the first row of `vectors`. */
  private readonly one: ReplayRecord[] = [];
  private first = new Float64Array(0);
  readonly counts: Record<Verdict, number> = { applied: 0, late: 0, duplicate: 0 };

  constructor(
    readonly features: FeatureSet,
    readonly allowedLatenessMs: number,
    options: {
      state?: ReplayState;
      /**
       * How many partitions the log holds: once each has been seen, tiles older than every partition's watermark
       * by a whole window are dropped. Left out, none is ever dropped: exact for any log, but the state then grows
       * with the span of the history (a partition may start far behind the others).
       */
      partitions?: number;
    } = {},
  ) {
    this.partitions = options.partitions ?? Number.POSITIVE_INFINITY;
    this.state = options.state ?? new TileRings(features);
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
    this.one[0] = r;
    return this.applyChunk(this.one).emitted[0] === 1 ? this.first : null;
  }

  /**
   * Applies records in log order, as apply() would one by one (the same vectors), faster: the state takes them
   * a chunk at a time. A few thousand records per call amortise the per-chunk work.
   */
  applyChunk(records: readonly ReplayRecord[]): ReplayChunk {
    const n = records.length;
    const F = this.features.names.length;
    const c = this.chunk;
    if (this.emitted.length < n) {
      this.emitted = new Uint8Array(n);
      this.vectors = new Float64Array(n * F);
      this.first = this.vectors.subarray(0, F);
      c.time = new Float64Array(n);
      c.keyIdsAt = new Int32Array(n);
      c.lowWatermark = new Float64Array(n);
      c.row = new Int32Array(n);
    }
    c.length = 0;
    for (let i = 0; i < n; i++) {
      const r = records[i] as ReplayRecord;
      const admission = this.admissionOf(r.partition);
      const before = admission.maxEventTime;
      const verdict = admission.admit(r.event.event_id, r.event.event_time);
      // Named, not keyed by the verdict: a property keyed by several strings is a slow (megamorphic) access.
      if (verdict === 'applied') this.counts.applied++;
      else if (verdict === 'late') this.counts.late++;
      else this.counts.duplicate++;
      this.emitted[i] = verdict === 'applied' && r.source === 'impression' ? 1 : 0;
      if (verdict !== 'applied') continue;
      if (admission.maxEventTime !== before) this.low = this.lowWatermark();
      const k = c.length++;
      c.events[k] = r.event;
      c.time[k] = r.event.event_time;
      c.sources[k] = r.source;
      c.keyIds[k] = r.ids;
      c.keyIdsAt[k] = r.idsAt ?? 0;
      c.lowWatermark[k] = this.low;
      c.row[k] = i;
    }
    this.state.stepChunk(c, this.vectors);
    return { vectors: this.vectors, emitted: this.emitted };
  }

  private admissionOf(partition: string): Admission {
    if (partition === this.lastPartition && this.lastAdmission !== undefined) return this.lastAdmission;
    let admission = this.admissions.get(partition);
    if (admission === undefined) {
      admission = new Admission(this.allowedLatenessMs, undefined, false);
      this.admissions.set(partition, admission);
      this.low = this.lowWatermark();
    }
    this.lastPartition = partition;
    this.lastAdmission = admission;
    return admission;
  }
}
