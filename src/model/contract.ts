// The model contract between training and serving: an ONNX model with one float32 input `features` [batch, F]
// holding the RAW vector in `FeatureSet.names` order, one output `pctr` [batch, 1], and metadata naming the
// ordered features and the definitions' version. The scorer refuses a model that does not match its definitions.
import onnxProto from 'onnx-proto';
import type { FeatureSet } from '../features/compile.ts';
import { INPUT, OUTPUT } from './onnx-writer.ts';

const { onnx } = onnxProto;

export const META = {
  features: 'tributary.features',
  definitionsVersion: 'tributary.definitions_version',
  trainingWindow: 'tributary.training_window',
  metrics: 'tributary.metrics',
} as const;

export interface ModelContract {
  features: string[];
  definitionsVersion: string;
  trainingWindow: { from: string; to: string };
  metrics: Record<string, unknown>;
}

export class ModelContractError extends Error {}

/** Decodes the contract from model bytes; a model without the input, output or metadata it promises is refused. */
export function readContract(bytes: Uint8Array): ModelContract {
  let model: onnxProto.onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw new ModelContractError(`not an ONNX model: ${(err as Error).message}`);
  }
  const input = model.graph?.input ?? [];
  const inputs = input.map((i) => i.name);
  const outputs = (model.graph?.output ?? []).map((o) => o.name);
  if (inputs.length !== 1 || inputs[0] !== INPUT)
    throw new ModelContractError(`model inputs are [${inputs.join(', ')}], expected exactly "${INPUT}"`);
  const tensor = input[0]?.type?.tensorType;
  if (tensor?.elemType !== onnx.TensorProto.DataType.FLOAT)
    throw new ModelContractError(`model input "${INPUT}" must be float32`);
  if (!outputs.includes(OUTPUT))
    throw new ModelContractError(`model outputs are [${outputs.join(', ')}], expected "${OUTPUT}"`);
  const props = new Map(model.metadataProps.map((p) => [p.key, p.value]));
  const json = (key: string): unknown => {
    const v = props.get(key);
    if (v == null) throw new ModelContractError(`model metadata lacks ${key}`);
    try {
      return JSON.parse(v);
    } catch {
      throw new ModelContractError(`model metadata ${key} is not JSON`);
    }
  };
  const features = json(META.features);
  if (!Array.isArray(features) || !features.every((x) => typeof x === 'string'))
    throw new ModelContractError(`model metadata ${META.features} must be a JSON array of names`);
  const width = tensor.shape?.dim?.[1]?.dimValue;
  if (Number(width) !== features.length)
    throw new ModelContractError(
      `model input "${INPUT}" has ${width ?? 'no'} columns but its metadata lists ${features.length} features`,
    );
  const definitionsVersion = props.get(META.definitionsVersion);
  if (!definitionsVersion) throw new ModelContractError(`model metadata lacks ${META.definitionsVersion}`);
  return {
    features,
    definitionsVersion,
    trainingWindow: json(META.trainingWindow) as ModelContract['trainingWindow'],
    metrics: json(META.metrics) as Record<string, unknown>,
  };
}

/** What differs between a model's (or training set's) feature columns and the definitions; empty when they match. */
export function featureMismatch(names: readonly string[], definitionsVersion: string, features: FeatureSet): string[] {
  const want = features.names;
  const problems: string[] = [];
  const missing = want.filter((n) => !names.includes(n));
  const extra = names.filter((n) => !want.includes(n));
  if (missing.length) problems.push(`missing features: ${missing.join(', ')}`);
  if (extra.length) problems.push(`extra features: ${extra.join(', ')}`);
  if (!missing.length && !extra.length) {
    const at = want.findIndex((n, i) => names[i] !== n);
    if (at >= 0)
      problems.push(`reordered features: column ${at} is "${names[at]}", the definitions have "${want[at]}"`);
  }
  if (definitionsVersion !== features.version)
    problems.push(`definitions version mismatch: ${definitionsVersion} here, ${features.version} in the definitions`);
  return problems;
}

/** Throws unless the model's input columns are exactly the definitions' features, in order, of the same version. */
export function checkContract(contract: ModelContract, features: FeatureSet): void {
  const problems = featureMismatch(contract.features, contract.definitionsVersion, features);
  if (problems.length)
    throw new ModelContractError(`model does not match the feature definitions: ${problems.join('; ')}`);
}
