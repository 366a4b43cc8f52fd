// The backfill's engine: replays history in the order serving saw it through the same admission rule and
// feature definitions as the stream, and reads each impression's vector at its own moment, before anything
// later in the log. State lives in an in-process store; no I/O here.
import type { AdClick, AdImpression } from '../events/types.ts';
import { Admission, type Verdict } from '../features/admission.ts';
import type { FeatureSet } from '../features/compile.ts';
import type { Source } from '../features/define.ts';
import { MemoryStore } from '../online/memory-store.ts';
import { getOrCreate } from '../util/map.ts';

export type ReplayRecord =
  | { source: 'impression'; partition: string; event: AdImpression }
  | { source: 'click'; partition: string; event: AdClick };

export class Replay {
  readonly store = new MemoryStore();
  private readonly admissions = new Map<string, Admission>();
  readonly counts: Record<Verdict, number> = { applied: 0, late: 0, duplicate: 0 };

  constructor(
    readonly features: FeatureSet,
    readonly allowedLatenessMs: number,
  ) {}

  /**
   * Applies one record; for an applied impression returns its feature vector as of this point in the log, read
   * at the impression's event time (its own tile is outside every window, so reading before or after applying
   * the impression itself gives the same vector).
   */
  apply(r: ReplayRecord): { verdict: Verdict; vector?: Float64Array } {
    const admission = getOrCreate(this.admissions, r.partition, () => new Admission(this.allowedLatenessMs));
    const verdict = admission.admit(r.event.event_id, r.event.event_time);
    this.counts[verdict]++;
    if (verdict !== 'applied') return { verdict };
    let vector: Float64Array | undefined;
    if (r.source === 'impression') {
      const plan = this.features.plan([r.event], r.event.event_time);
      vector = this.features.assemble(plan, this.store.readSync(plan.requests))[0];
    }
    this.features.apply(r.source as Source, r.event, this.store);
    return { verdict, vector };
  }
}
