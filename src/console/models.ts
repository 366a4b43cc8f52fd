// The Models page's data: the registry's versions with their training runs' evaluation (AUC and log loss beside the
// baseline, calibration by bucket), which one is current and which ones scraped serve processes report serving.

import { readContract } from '../model/contract.ts';
import type { ModelRegistry } from '../model/registry.ts';
import { type ModelWeights, readWeights } from '../model/weights.ts';
import type { Sample } from './metrics-source.ts';

export interface ModelView {
  version: string;
  current: boolean;
  /** Serve processes (by metrics source) that report this version in service. */
  servedBy: string[];
  trainedAt: string;
  definitionsVersion: string;
  params: Record<string, unknown>;
  data: Record<string, { from: string; to: string; rows: number; positives: number }>;
  metrics: {
    auc: number | null;
    baselineAuc: number | null;
    logloss: number | null;
    baselineLogloss: number | null;
    aucLiftCi95: [number, number] | null;
    baselineFeature: string | null;
    evalCtr: number | null;
    meanPctr: number | null;
  };
  calibration: { from: number; to: number; rows: number; predicted: number; observed: number }[];
  baselineCalibration: ModelView['calibration'];
}

const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** Versions reported by `tributary_model_info` (1 = in service), by source. */
export function servedVersions(samples: readonly Sample[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const s of samples)
    if (s.name === 'tributary_model_info' && s.value === 1 && s.labels.version)
      out.set(s.labels.version, [...(out.get(s.labels.version) ?? []), s.source]);
  return out;
}

export async function listModels(registry: ModelRegistry, samples: readonly Sample[]): Promise<ModelView[]> {
  const served = servedVersions(samples);
  return (await registry.list()).map(({ version, current, run }) => {
    const m = run.metrics;
    const ci = Array.isArray(m.auc_lift_ci95) ? (m.auc_lift_ci95 as [number, number]) : null;
    return {
      version,
      current,
      servedBy: served.get(version) ?? [],
      trainedAt: run.trained_at,
      definitionsVersion: run.definitions_version,
      params: run.params,
      data: run.data,
      metrics: {
        auc: num(m.auc),
        baselineAuc: num(m.baseline_auc),
        logloss: num(m.logloss),
        baselineLogloss: num(m.baseline_logloss),
        aucLiftCi95: ci,
        baselineFeature: typeof m.baseline_feature === 'string' ? m.baseline_feature : null,
        evalCtr: num(m.eval_ctr),
        meanPctr: num(m.mean_pctr),
      },
      calibration: (m.calibration as ModelView['calibration'] | undefined) ?? [],
      baselineCalibration: (m.baseline_calibration as ModelView['calibration'] | undefined) ?? [],
    };
  });
}

export async function modelWeights(
  registry: ModelRegistry,
  version: string,
): Promise<ModelWeights | { bias: null; weights: []; note: string }> {
  const bytes = await registry.read(version);
  const weights = readWeights(bytes);
  if (weights) return weights;
  const model = String(readContract(bytes).params?.model ?? 'external');
  return { bias: null, weights: [], note: `a ${model} model: no per-feature weights (not the built-in logistic one)` };
}
