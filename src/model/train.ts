// `tributary train`'s core: training set -> time split -> logistic regression -> evaluation beside the baseline
// (the ad's smoothed historical CTR alone) -> ONNX bytes carrying the contract's metadata, plus the run record.
import { resolve } from 'node:path';
import type { FeatureSet } from '../features/compile.ts';
import { parseDuration } from '../features/time.ts';
import { featureMismatch, META } from './contract.ts';
import { fitLogistic, type LogisticModel, predict, transformOf } from './logistic.ts';
import { auc, aucLiftInterval, type CalibrationBucket, calibration, logloss } from './metrics.ts';
import { writeOnnx } from './onnx-writer.ts';
import type { TrainingRun } from './registry.ts';
import { type Part, readTrainingSet, splitByTime, TrainingSetError } from './training-data.ts';

export interface TrainOptions {
  trainingSet: string;
  features: FeatureSet;
  /** Share of the latest rows held out for evaluation. */
  evalFraction: number;
  l2: number;
  /** Seeds the bootstrap of the AUC lift's interval (the fit itself is exact and has no randomness). */
  seed: number;
}

export interface Metrics {
  auc: number;
  logloss: number;
  baseline_auc: number;
  baseline_logloss: number;
  /** 95% interval of AUC − baseline AUC on the evaluation rows (paired bootstrap). */
  auc_lift_ci95: [number, number];
  baseline_feature: string;
  /** Training rows and clicks. */
  rows: number;
  positives: number;
  eval_rows: number;
  eval_positives: number;
  /** Observed click rate and mean prediction on the evaluation rows. */
  eval_ctr: number;
  mean_pctr: number;
  calibration: CalibrationBucket[];
  baseline_calibration: CalibrationBucket[];
}

export interface TrainResult {
  bytes: Uint8Array;
  model: LogisticModel;
  metrics: Metrics;
  run: TrainingRun;
  /** The evaluation rows (raw vectors in `features.names` order) and the model's predictions on them. */
  evaluation: Part & { pctr: Float64Array };
}

/** The ad's CTR feature with the longest window: its smoothed historical CTR, used directly as a probability. */
export function baselineFeature(features: FeatureSet): number {
  let best = -1;
  features.features.forEach((s, i) => {
    if (s.entity !== 'ad' || s.kind !== 'ratio') return;
    const prev = features.features[best];
    if (!prev || parseDuration(s.window) > parseDuration(prev.window)) best = i;
  });
  if (best < 0) throw new Error('the definitions have no ad CTR feature to use as the baseline');
  return best;
}

const iso = (t: number) => new Date(t).toISOString();

export async function train(o: TrainOptions): Promise<TrainResult> {
  const t0 = performance.now();
  const data = await readTrainingSet(o.trainingSet);
  const problems = featureMismatch(data.features, data.meta.definitions_version, o.features);
  if (problems.length)
    throw new TrainingSetError(
      `${o.trainingSet} does not fit the current definitions (${problems.join('; ')}): rerun \`tributary backfill\` with all features`,
    );
  const { train: part, evaluation } = splitByTime(data, o.evalFraction);
  if (!evaluation.y.includes(1) || !evaluation.y.includes(0))
    throw new TrainingSetError(
      'the evaluation part needs both clicks and non-clicks: use more data or a larger --eval-fraction',
    );
  const f = o.features.names.length;
  const transforms = o.features.features.map((s) => transformOf(s.kind));
  const fit = fitLogistic(part.x, part.y, transforms, { l2: o.l2 });

  const m = evaluation.y.length;
  const pctr = new Float64Array(m);
  const base = new Float64Array(m);
  const b = baselineFeature(o.features);
  for (let r = 0; r < m; r++) {
    const row = evaluation.x.subarray(r * f, (r + 1) * f);
    pctr[r] = predict(fit.model, row);
    base[r] = row[b] as number;
  }
  const sum = (a: Iterable<number>) => {
    let s = 0;
    for (const v of a) s += v;
    return s;
  };
  const metrics: Metrics = {
    auc: auc(pctr, evaluation.y),
    logloss: logloss(pctr, evaluation.y),
    baseline_auc: auc(base, evaluation.y),
    baseline_logloss: logloss(base, evaluation.y),
    auc_lift_ci95: aucLiftInterval(pctr, base, evaluation.y, o.seed),
    baseline_feature: o.features.names[b] as string,
    rows: part.y.length,
    positives: sum(part.y),
    eval_rows: m,
    eval_positives: sum(evaluation.y),
    eval_ctr: sum(evaluation.y) / m,
    mean_pctr: sum(pctr) / m,
    calibration: calibration(pctr, evaluation.y),
    baseline_calibration: calibration(base, evaluation.y),
  };
  const params = { model: 'logistic_regression', l2: o.l2, eval_fraction: o.evalFraction, seed: o.seed };
  const range = (p: Part) => ({
    from: iso(p.time[0] as number),
    to: iso(p.time[p.time.length - 1] as number),
    rows: p.y.length,
    positives: sum(p.y),
  });
  const ranges = { train: range(part), eval: range(evaluation) };
  const bytes = writeOnnx(fit.model, [
    [META.features, JSON.stringify(o.features.names)],
    [META.definitionsVersion, o.features.version],
    [META.trainingWindow, JSON.stringify({ from: ranges.train.from, to: ranges.train.to })],
    [META.metrics, JSON.stringify(metrics)],
    [META.params, JSON.stringify({ ...params, newton_iterations: fit.iterations })],
  ]);
  const run: TrainingRun = {
    trained_at: new Date().toISOString(),
    training_set: resolve(o.trainingSet),
    definitions_version: o.features.version,
    params,
    data: ranges,
    metrics: { ...metrics, train_logloss: fit.trainLogloss, newton_iterations: fit.iterations },
    seconds: +((performance.now() - t0) / 1000).toFixed(3),
  };
  return { bytes, model: fit.model, metrics, run, evaluation: { ...evaluation, pctr } };
}
