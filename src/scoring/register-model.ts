// Registering a model trained outside Tributary (`tributary models register`, the demo's LightGBM step): it must
// pass the smoke prediction first; its run record is what its metadata says about its training.
import { resolve } from 'node:path';
import type { FeatureSet } from '../features/compile.ts';
import { type ModelContract, readContract } from '../model/contract.ts';
import type { ModelRegistry, TrainingRun } from '../model/registry.ts';
import { type SmokeResult, smokePrediction } from './smoke-prediction.ts';

export interface RegisteredModel {
  version: string;
  contract: ModelContract;
  smoke: SmokeResult;
}

/** Checks the model (throws ModelContractError with the reason) and stores it, unpromoted. */
export async function registerModel(
  registry: ModelRegistry,
  bytes: Uint8Array,
  file: string,
  features: FeatureSet,
): Promise<RegisteredModel> {
  const smoke = await smokePrediction(bytes, features);
  const contract = readContract(bytes);
  const m = contract.metrics;
  const window = contract.trainingWindow;
  const count = (v: unknown) => (typeof v === 'number' ? v : 0);
  const run: TrainingRun = {
    trained_at: new Date().toISOString(),
    training_set: typeof m.training_set === 'string' ? m.training_set : '',
    definitions_version: contract.definitionsVersion,
    params: { model: 'external', ...contract.params, file: resolve(file) },
    data: window ? { train: { ...window, rows: count(m.rows), positives: count(m.positives) } } : {},
    metrics: m,
    seconds: 0,
  };
  return { version: await registry.register(bytes, run), contract, smoke };
}
