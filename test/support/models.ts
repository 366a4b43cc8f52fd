// Real models for scoring tests and benchmarks: records -> the backfill (point-in-time rows, labels) -> `train`
// (logistic regression, ONNX with the contract's metadata) -> the registry. No model is hand-made.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ReplayRecord } from '../../src/backfill/replay.ts';
import { runBackfill } from '../../src/backfill/run.ts';
import type { LogRecord } from '../../src/events/generator.ts';
import type { FeatureSet } from '../../src/features/compile.ts';
import type { ModelRegistry } from '../../src/model/registry.ts';
import { train } from '../../src/model/train.ts';

/** A generated log's impressions and clicks as the backfill reads them (one partition: the log's order). */
export function replayRecords(log: readonly LogRecord[]): ReplayRecord[] {
  const out: ReplayRecord[] = [];
  for (const { record } of log) {
    if (record.kind === 'impression') out.push({ source: 'impression', partition: 'log', event: record.event });
    else if (record.kind === 'click') out.push({ source: 'click', partition: 'log', event: record.event });
  }
  return out;
}

/** Backfills `records` into a training set, trains on it and registers the model; returns its version. */
export async function trainAndRegister(
  registry: ModelRegistry,
  features: FeatureSet,
  records: readonly ReplayRecord[],
  l2: number,
): Promise<string> {
  const out = join(mkdtempSync(join(tmpdir(), 'train-')), 'train.csv');
  await runBackfill({
    features,
    open: async function* () {
      yield* records;
    },
    sourceName: 'test',
    out,
    attributionMs: 3600_000,
    allowedLatenessMs: 3600_000,
  });
  const { bytes, run } = await train({ trainingSet: out, features, evalFraction: 0.2, l2, seed: 1 });
  return registry.register(bytes, run);
}
