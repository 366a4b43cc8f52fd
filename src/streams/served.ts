// Served-vector recording: for each impression a batch applies, the vector a scorer reading the online store at
// that moment would have assembled. Before the batch, every part of the entities its impressions read is loaded
// from the online store into the engine's rings (parts merge as they load); the batch's applied impressions then
// step through them in order, each read just before it is applied, as the backfill reads: "the online store as
// of just before it". The parity check compares these vectors with the backfill's and with SQL.
import type { AdImpression } from '../events/types.ts';
import type { FeatureSet } from '../features/compile.ts';
import { TileRings } from '../features/tile-rings.ts';
import type { PartReader } from '../online/contract.ts';
import { chunkOf } from '../online/part-writer.ts';

export class ServedView {
  private constructor(
    private readonly features: FeatureSet,
    private readonly rings: TileRings,
  ) {}

  static async load(
    features: FeatureSet,
    reader: PartReader,
    impressions: readonly AdImpression[],
  ): Promise<ServedView> {
    const rings = new TileRings(features);
    const found = rings.locate(chunkOf({ source: 'impression', events: impressions }, Number.NEGATIVE_INFINITY));
    // One round trip for every entity the batch's impressions read.
    const parts = await reader.readParts(found.map((e) => e.key));
    found.forEach((e, i) => {
      for (const part of parts[i] ?? []) rings.loadPart(e, part);
    });
    return new ServedView(features, rings);
  }

  /** Each impression's vector as of just before it, the ones before it applied (in order): F values each. */
  vectors(applied: readonly AdImpression[]): Float64Array {
    const out = new Float64Array(applied.length * this.features.names.length);
    this.rings.stepChunk(chunkOf({ source: 'impression', events: applied }, Number.NEGATIVE_INFINITY), out);
    return out;
  }
}
