// The model contract between training and serving: an ONNX model with one float32 input `features` [batch, F]
// holding the RAW vector in `FeatureSet.names` order, an output giving the click probability, and metadata naming
// the ordered features and the definitions' version. The scorer refuses a model that does not match its definitions.
// The built-in model answers `pctr` [batch, 1]; a classifier converted by skl2onnx / onnxmltools answers a label and
// `probabilities` [batch, 2] (zipmap off), whose column 1 is the click class. Which output and column: decided here.
import onnxProto from 'onnx-proto';
import type { FeatureSet } from '../features/compile.ts';
import { INPUT, OUTPUT } from './onnx-writer.ts';

const { onnx } = onnxProto;

export const META = {
  features: 'tributary.features',
  definitionsVersion: 'tributary.definitions_version',
  trainingWindow: 'tributary.training_window',
  metrics: 'tributary.metrics',
  params: 'tributary.params',
} as const;

export interface ModelContract {
  features: string[];
  definitionsVersion: string;
  /** The output holding the click probability (see `clickOutputOf`). */
  output: string;
  /** Where and when the model was trained, and its evaluation, when its trainer recorded them. */
  trainingWindow: { from: string; to: string } | null;
  metrics: Record<string, unknown>;
  /** How it was trained (model family, hyperparameters), when its trainer recorded it. */
  params: Record<string, unknown>;
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
  if (inputs.length !== 1 || inputs[0] !== INPUT)
    throw new ModelContractError(`model inputs are [${inputs.join(', ')}], expected exactly "${INPUT}"`);
  const tensor = input[0]?.type?.tensorType;
  if (tensor?.elemType !== onnx.TensorProto.DataType.FLOAT)
    throw new ModelContractError(`model input "${INPUT}" must be float32`);
  const output = clickOutputOf(model.graph?.output ?? []);
  const props = new Map(model.metadataProps.map((p) => [p.key, p.value]));
  const json = (key: string, optional = false): unknown => {
    const v = props.get(key);
    if (v == null && optional) return null;
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
    output,
    trainingWindow: json(META.trainingWindow, true) as ModelContract['trainingWindow'],
    metrics: (json(META.metrics, true) ?? {}) as Record<string, unknown>,
    params: (json(META.params, true) ?? {}) as Record<string, unknown>,
  };
}

/**
 * The output that holds the click probability: `pctr` if there is one, else a float tensor named `probabilities`
 * (the converters' name), else the model's only float tensor output. A ZipMap (a list of maps) is refused: reading
 * one costs an object per row, and the converters can leave it out.
 */
export function clickOutputOf(outputs: readonly onnxProto.onnx.IValueInfoProto[]): string {
  const names = outputs.map((o) => o.name ?? '');
  const floats = outputs.filter((o) => o.type?.tensorType?.elemType === onnx.TensorProto.DataType.FLOAT);
  const chosen =
    floats.find((o) => o.name === OUTPUT) ??
    floats.find((o) => o.name === 'probabilities') ??
    (floats.length === 1 ? floats[0] : undefined);
  if (!chosen) {
    const zipmap = outputs.find((o) => o.type?.sequenceType || o.type?.mapType);
    if (zipmap)
      throw new ModelContractError(
        `model output "${zipmap.name}" is a ZipMap (a list of maps), not a probability tensor: export with zipmap off (onnxmltools: zipmap=False; skl2onnx: options={'zipmap': False})`,
      );
    throw new ModelContractError(
      `model outputs are [${names.join(', ')}], expected "${OUTPUT}" [n, 1] or a float "probabilities" [n, 2]`,
    );
  }
  const dims = chosen.type?.tensorType?.shape?.dim ?? [];
  const width = dims.length === 2 ? dims[1]?.dimValue : undefined;
  if (dims.length > 2 || (width != null && Number(width) !== 1 && Number(width) !== 2))
    throw new ModelContractError(
      `model output "${chosen.name}" has shape [${dims.map((d) => d.dimValue ?? d.dimParam ?? '?').join(', ')}], expected [n], [n, 1] or [n, 2]`,
    );
  return chosen.name as string;
}

/**
 * The click probability per row from the output `clickOutputOf` chose: [n] or [n, 1] as they are, [n, 2] (the
 * probabilities of classes 0 and 1) column 1.
 */
export function clickProbabilities(data: Float32Array, dims: readonly number[], rows: number): Float32Array {
  const [n, width = 1] = dims;
  if (n !== rows || dims.length > 2 || (width !== 1 && width !== 2))
    throw new ModelContractError(
      `model answered shape [${dims.join(', ')}] for ${rows} rows, expected [${rows}], [${rows}, 1] or [${rows}, 2]`,
    );
  if (width === 1) return data;
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) out[r] = data[2 * r + 1] as number;
  return out;
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
