// Served-vector recording: for each impression a batch applies, the vector a scorer reading the online store at
// that moment would have assembled. Before the batch, the tiles its impressions will read are loaded from Valkey
// into a local view; the batch's own updates are applied to the view in order, so each impression reads exactly
// "Valkey as of just before it". The parity check compares these vectors with the backfill's and with SQL.
import type { AdImpression } from '../events/types.ts';
import type { FeatureSet } from '../features/compile.ts';
import type { RawReader } from '../online/contract.ts';
import { MemoryStore } from '../online/memory-store.ts';
import { getOrCreate } from '../util/map.ts';

export class ServedView {
  readonly view: MemoryStore;

  private constructor(private readonly features: FeatureSet) {
    this.view = new MemoryStore(features);
  }

  static async load(
    features: FeatureSet,
    reader: RawReader,
    impressions: readonly AdImpression[],
  ): Promise<ServedView> {
    const served = new ServedView(features);
    // One request per entity with every field any impression of the batch reads: one round trip, no repeats.
    const merged = new Map<string, { fields: Set<string>; sets: Set<string> }>();
    for (const imp of impressions) {
      for (const r of features.plan([imp], imp.event_time).requests) {
        const m = getOrCreate(merged, r.key, () => ({ fields: new Set<string>(), sets: new Set<string>() }));
        for (const f of r.fields) m.fields.add(f);
        for (const group of r.sets) for (const f of group) m.sets.add(f);
      }
    }
    const requests = [...merged].map(([key, m]) => ({ key, fields: [...m.fields], sets: [[...m.sets]] }));
    for (const raw of await reader.readRaw(requests)) {
      for (const [field, value] of raw.fields) if (value !== null) served.view.load(raw.key, field, value);
      for (const [field, members] of raw.sets) for (const m of members) served.view.sadd(raw.key, field, m);
    }
    return served;
  }

  vector(imp: AdImpression): Float64Array {
    const plan = this.features.plan([imp], imp.event_time);
    return this.features.assemble(plan, this.view.readSync(plan.requests))[0] as Float64Array;
  }
}
