// A registered model's AUC and log loss on given rows, scored through the code the scorer runs (ServedModel): how a
// model trained elsewhere is compared with the built-in one on the same held-out rows (`train`'s evaluation part).
import type { FeatureSet } from '../features/compile.ts';
import { auc, logloss } from '../model/metrics.ts';
import type { Part } from '../model/training-data.ts';
import { ServedModel } from './model-runtime.ts';

export interface ModelEvaluation {
  auc: number;
  logloss: number;
  mean_pctr: number;
  rows: number;
}

const BATCH = 4096;

/** Scores `rows` (raw vectors in `features.names` order) with the model in `bytes`. */
export async function evaluateModel(bytes: Uint8Array, features: FeatureSet, rows: Part): Promise<ModelEvaluation> {
  const model = await ServedModel.load('evaluation', bytes, features);
  const f = features.names.length;
  const n = rows.y.length;
  const pctr = new Float64Array(n);
  try {
    for (let from = 0; from < n; from += BATCH) {
      const to = Math.min(n, from + BATCH);
      const batch = Float32Array.from(rows.x.subarray(from * f, to * f));
      pctr.set(await model.score(batch, to - from, f), from);
    }
  } finally {
    await model.retire();
  }
  let sum = 0;
  for (const p of pctr) sum += p;
  return { auc: auc(pctr, rows.y), logloss: logloss(pctr, rows.y), mean_pctr: sum / n, rows: n };
}
