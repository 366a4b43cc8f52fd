// Served-vector recording: for each impression a batch applies, the vector a scorer reading the online store at
// that moment would have assembled. Before the batch, the parts of the entities its impressions read are loaded from
// the online store into a local view; the batch's own updates are applied to the view in order, so each impression
// reads exactly "the online store as of just before it". The parity check compares these vectors with the backfill's and with SQL.
import type { AdImpression } from '../events/types.ts';
import type { FeatureSet } from '../features/compile.ts';
import type { PartReader } from '../online/contract.ts';
import { MemoryStore } from '../online/memory-store.ts';
import type { Part } from '../online/parts.ts';

export class ServedView {
  readonly view: MemoryStore;

  private constructor(private readonly features: FeatureSet) {
    this.view = new MemoryStore(features);
  }

  static async load(
    features: FeatureSet,
    reader: PartReader,
    impressions: readonly AdImpression[],
  ): Promise<ServedView> {
    const served = new ServedView(features);
    // Every entity any impression of the batch reads, once: one round trip.
    const merged = new Set<string>();
    for (const imp of impressions) for (const r of features.plan([imp], imp.event_time).requests) merged.add(r.key);
    const keys = [...merged];
    const parts = await reader.readParts(keys);
    keys.forEach((key, i) => {
      served.view.hold(key, parts[i] as Part[]);
    });
    return served;
  }

  vector(imp: AdImpression): Float64Array {
    const plan = this.features.plan([imp], imp.event_time);
    return this.features.assemble(plan, this.view.readSync(plan.requests))[0] as Float64Array;
  }
}
