// Real models for scoring tests and benchmarks: records -> the backfill (point-in-time rows, labels) -> `train`
// (logistic regression, ONNX with the contract's metadata) -> the registry. No model is hand-made.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ReplayRecord } from '../../src/backfill/replay.ts';
import { runBackfill } from '../../src/backfill/run.ts';
import type { LogRecord } from '../../src/events/generator.ts';
import type { AdImpression } from '../../src/events/types.ts';
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

/** Backfills `records` into a training set (CSV, its .meta.json beside it); returns the CSV's path. */
export async function trainingSetOf(features: FeatureSet, records: readonly ReplayRecord[]): Promise<string> {
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
  return out;
}

/** Backfills `records` into a training set, trains on it and registers the model; returns its version. */
export async function trainAndRegister(
  registry: ModelRegistry,
  features: FeatureSet,
  records: readonly ReplayRecord[],
  l2: number,
): Promise<string> {
  const out = await trainingSetOf(features, records);
  const { bytes, run } = await train({ trainingSet: out, features, evalFraction: 0.2, l2, seed: 1 });
  return registry.register(bytes, run);
}

/** A POST /v1/rank body: `at`'s user and page, `ads` as the candidates (with their bids), ranked as of `time`. */
export function rankBody(requestId: string, at: AdImpression, ads: Iterable<AdImpression>, time: number) {
  return {
    request_id: requestId,
    user_id: at.user_id,
    publisher_id: at.publisher_id,
    device: at.device,
    os: at.os,
    time,
    candidates: [...ads].map((i) => ({
      ad_id: i.ad_id,
      campaign_id: i.campaign_id,
      advertiser_id: i.advertiser_id,
      category: i.category,
      bid: i.bid,
    })),
  };
}
