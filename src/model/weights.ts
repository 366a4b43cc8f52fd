// A registered logistic model's weights, read back from its ONNX graph (onnx-writer.ts writes them as the
// `weights` and `bias` initializers, on standardised features): what the console shows as feature weights.
import onnxProto from 'onnx-proto';
import { readContract } from './contract.ts';

const { onnx } = onnxProto;

export interface FeatureWeight {
  feature: string;
  /** Weight on the standardised (transformed, centred, scaled) feature: comparable across features. */
  weight: number;
}

export interface ModelWeights {
  bias: number;
  weights: FeatureWeight[];
}

/**
 * The weights by feature, in the contract's feature order; null for a model without them (one trained elsewhere,
 * e.g. trees: `models register`).
 */
export function readWeights(bytes: Uint8Array): ModelWeights | null {
  const { features } = readContract(bytes);
  const init = onnx.ModelProto.decode(bytes).graph?.initializer ?? [];
  const floats = (name: string) => init.find((t) => t.name === name)?.floatData;
  const w = floats('weights');
  const b = floats('bias');
  if (!w || w.length !== features.length || !b || b.length !== 1) return null;
  return { bias: b[0] as number, weights: features.map((feature, i) => ({ feature, weight: w[i] as number })) };
}
