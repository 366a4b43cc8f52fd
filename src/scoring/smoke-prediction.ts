// The check a model passes before `tributary models register` accepts it: its contract matches the definitions and
// it scores a small batch through the same code the scorer runs (ServedModel), answering one finite probability in
// [0, 1] per row. The batch holds the all-defaults vector (an unseen user, ad and context) and seeded vectors of
// plausible values per feature kind, so a model that only breaks off the defaults is caught too.
import { Rng } from '../events/random.ts';
import type { FeatureSet } from '../features/compile.ts';
import { ModelContractError } from '../model/contract.ts';
import { ServedModel } from './model-runtime.ts';

export interface SmokeResult {
  rows: number;
  /** The model's probability for each smoke row (row 0: all defaults). */
  pctr: number[];
}

/** Row 0 is every feature's default; the others draw plausible values for each feature's kind. */
export function smokeVectors(features: FeatureSet, rows: number, seed = 1): Float32Array {
  const f = features.names.length;
  const out = new Float32Array(rows * f);
  const rng = new Rng(seed);
  for (let r = 0; r < rows; r++)
    features.features.forEach((s, j) => {
      const u = rng.next();
      let v = s.default;
      if (r > 0)
        v =
          s.kind === 'ratio'
            ? Math.min(0.99, s.default * (0.2 + 3 * u))
            : s.kind === 'last_seen'
              ? s.default * u
              : Math.round(u ** 3 * 2000);
      out[r * f + j] = v;
    });
  return out;
}

/** Throws ModelContractError with the reason when the model does not fit the definitions or answers nonsense. */
export async function smokePrediction(bytes: Uint8Array, features: FeatureSet, rows = 8): Promise<SmokeResult> {
  const model = await ServedModel.load('smoke', bytes, features);
  try {
    const width = features.names.length;
    let pctr: Float32Array;
    try {
      pctr = await model.score(smokeVectors(features, rows), rows, width);
    } catch (err) {
      if (err instanceof ModelContractError) throw err;
      throw new ModelContractError(
        `model failed to score a [${rows} × ${width}] float batch: ${(err as Error).message}`,
      );
    }
    const bad = [...pctr].findIndex((p) => !(p >= 0 && p <= 1));
    if (bad >= 0)
      throw new ModelContractError(
        `model answered ${pctr[bad]} for smoke row ${bad}${bad === 0 ? ' (all defaults)' : ''}: expected a probability in [0, 1]`,
      );
    return { rows, pctr: [...pctr] };
  } finally {
    await model.retire();
  }
}
