// Writes a LogisticModel as an ONNX graph that takes the RAW feature vector (every transform lives inside the
// graph, see contract.ts) and answers pCTR. Bytes depend only on the model and its metadata: no timestamps, no
// random ids, fixed node and metadata order, so the same training run gives the same file.
import onnxProto from 'onnx-proto';
import { LOGIT_EPS, type LogisticModel } from './logistic.ts';

const { onnx } = onnxProto;

export const INPUT = 'features';
export const OUTPUT = 'pctr';
const OPSET = 13;

function floats(name: string, dims: number[], values: ArrayLike<number>): onnxProto.onnx.ITensorProto {
  return { name, dims, dataType: onnx.TensorProto.DataType.FLOAT, floatData: Array.from(values) };
}

function node(op: string, inputs: string[], output: string): onnxProto.onnx.INodeProto {
  return { opType: op, input: inputs, output: [output], name: output };
}

function tensorType(f: number | null): onnxProto.onnx.ITypeProto {
  return {
    tensorType: {
      elemType: onnx.TensorProto.DataType.FLOAT,
      shape: { dim: [{ dimParam: 'batch' }, f === null ? { dimValue: 1 } : { dimValue: f }] },
    },
  };
}

/** `metadata` is written in the order given (callers pass a fixed order). */
export function writeOnnx(m: LogisticModel, metadata: [string, string][]): Uint8Array {
  const f = m.transforms.length;
  const graph: onnxProto.onnx.IGraphProto = {
    name: 'tributary_pctr',
    input: [{ name: INPUT, type: tensorType(f) }],
    output: [{ name: OUTPUT, type: tensorType(null) }],
    initializer: [
      {
        name: 'is_log',
        dims: [f],
        dataType: onnx.TensorProto.DataType.BOOL,
        int32Data: m.transforms.map((t) => (t === 'log1p' ? 1 : 0)),
      },
      floats('one', [], [1]),
      floats('rate_lo', [], [LOGIT_EPS]),
      floats('rate_hi', [], [1 - LOGIT_EPS]),
      floats('mean', [f], m.mean),
      floats('scale', [f], m.scale),
      floats('weights', [f, 1], m.weights),
      floats('bias', [1], [m.bias]),
    ],
    node: [
      // One Log for both transforms (one pass over the batch, not three): log(1 + max(x, 0)) for counts, sums and
      // ages; logit(r) = log(r / (1 - r)) of the clipped rate for smoothed rates.
      node('Relu', [INPUT], 'nonneg'),
      node('Add', ['nonneg', 'one'], 'plus_one'),
      node('Clip', [INPUT, 'rate_lo', 'rate_hi'], 'rate'),
      node('Sub', ['one', 'rate'], 'one_minus_rate'),
      node('Div', ['rate', 'one_minus_rate'], 'odds'),
      node('Where', ['is_log', 'plus_one', 'odds'], 'log_argument'),
      node('Log', ['log_argument'], 'transformed'),
      // standardise with the training mean and deviation, then the linear model
      node('Sub', ['transformed', 'mean'], 'centred'),
      node('Mul', ['centred', 'scale'], 'standardised'),
      node('MatMul', ['standardised', 'weights'], 'dot'),
      node('Add', ['dot', 'bias'], 'logit_pctr'),
      node('Sigmoid', ['logit_pctr'], OUTPUT),
    ],
  };
  const model: onnxProto.onnx.IModelProto = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: OPSET }],
    producerName: 'tributary',
    graph,
    metadataProps: metadata.map(([key, value]) => ({ key, value })),
  };
  return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
}
