// The promotion gate: a new model replaces the current one only when it is at least as good on the SAME held-out
// rows (the new run's evaluation period, both models scored there by onnxruntime). The rule, stated once:
//   1. log loss:     candidate ≤ current × (1 + LOGLOSS_TOLERANCE)
//   2. AUC:          candidate ≥ current − AUC_TOLERANCE
//   3. calibration:  |candidate's mean pCTR / observed CTR − 1| ≤ CALIBRATION_BOUND
// No current model: promote (the first model). A current model whose contract no longer matches the definitions:
// promote (the scorer refuses that model anyway, so it serves nothing). `force`: promote whatever the checks say,
// recorded as forced. `decide` is pure; `compareOnRows` does the scoring.
import type { FeatureSet } from '../features/compile.ts';
import { evaluateModel } from '../scoring/evaluate-model.ts';
import { featureMismatch, readContract } from './contract.ts';
import { type ModelRegistry, modelVersion, type TrainingRun } from './registry.ts';

/** Relative slack on log loss: a fresher model that is as good, to the noise of one evaluation, still ships. */
export const LOGLOSS_TOLERANCE = 0.001;
/** Absolute slack on AUC. */
export const AUC_TOLERANCE = 0.002;
/** Largest relative gap between mean prediction and observed click rate: pCTR is multiplied by money. */
export const CALIBRATION_BOUND = 0.1;

/** Exit code of `train --promote` / `retrain` when the model was trained and registered but not promoted. */
export const NOT_PROMOTED_EXIT_CODE = 4;

/** One model's figures on the evaluation rows. */
export interface Score {
  auc: number;
  logloss: number;
  mean_pctr: number;
}

export interface GateInputs {
  candidate: string;
  /** The current version, or null when there is none. */
  current: string | null;
  /** Why the current model does not fit today's definitions (empty or absent when it does). */
  currentMismatch?: string[];
  /** Both models on the same rows (absent when there is no comparable current model). */
  rows?: { count: number; positives: number; from: string; to: string };
  candidateScore?: Score;
  currentScore?: Score;
  force?: boolean;
}

export interface GateCheck {
  name: 'logloss' | 'auc' | 'calibration';
  candidate: number;
  /** The current model's figure (calibration: the bound). */
  against: number;
  /** The threshold the candidate had to meet. */
  limit: number;
  pass: boolean;
}

export interface GateDecision {
  candidate: string;
  current: string | null;
  promote: boolean;
  forced: boolean;
  reason: string;
  rule: { logloss_tolerance: number; auc_tolerance: number; calibration_bound: number };
  rows?: GateInputs['rows'];
  candidate_score?: Score;
  current_score?: Score;
  checks: GateCheck[];
}

const f5 = (x: number) => x.toFixed(5);
const f4 = (x: number) => x.toFixed(4);

/** The verdict, its reason (the failed checks with both figures) and every figure it used. */
export function decide(i: GateInputs): GateDecision {
  const base = {
    candidate: i.candidate,
    current: i.current,
    forced: false,
    rule: { logloss_tolerance: LOGLOSS_TOLERANCE, auc_tolerance: AUC_TOLERANCE, calibration_bound: CALIBRATION_BOUND },
    checks: [] as GateCheck[],
  };
  if (i.current === null) return { ...base, promote: true, reason: 'no current model: the first one is promoted' };
  if (i.current === i.candidate)
    return { ...base, promote: true, reason: 'the same model is already current (same data and parameters)' };
  if (i.currentMismatch?.length)
    return {
      ...base,
      promote: true,
      reason: `current model ${i.current} does not match the definitions (${i.currentMismatch.join('; ')}): the scorer refuses it, so the new model replaces it`,
    };
  const c = i.candidateScore;
  const p = i.currentScore;
  const rows = i.rows;
  if (!c || !p || !rows) throw new Error('the gate needs both models scored on the same rows');
  const ratio = rows.positives > 0 ? c.mean_pctr / (rows.positives / rows.count) : Number.POSITIVE_INFINITY;
  const checks: GateCheck[] = [
    {
      name: 'logloss',
      candidate: c.logloss,
      against: p.logloss,
      limit: p.logloss * (1 + LOGLOSS_TOLERANCE),
      pass: c.logloss <= p.logloss * (1 + LOGLOSS_TOLERANCE),
    },
    {
      name: 'auc',
      candidate: c.auc,
      against: p.auc,
      limit: p.auc - AUC_TOLERANCE,
      pass: c.auc >= p.auc - AUC_TOLERANCE,
    },
    {
      name: 'calibration',
      candidate: ratio,
      against: CALIBRATION_BOUND,
      limit: CALIBRATION_BOUND,
      pass: Math.abs(ratio - 1) <= CALIBRATION_BOUND,
    },
  ];
  const failed = checks.filter((k) => !k.pass).map(describeFailure);
  const on = `on ${rows.count} held-out rows`;
  const scored = { ...base, rows, candidate_score: c, current_score: p, checks };
  if (!failed.length) return { ...scored, promote: true, reason: `beats ${i.current} ${on}` };
  const why = `${failed.join('; ')} (${on})`;
  if (i.force) return { ...scored, promote: true, forced: true, reason: `forced: ${why}` };
  return { ...scored, promote: false, reason: why };
}

function describeFailure(k: GateCheck): string {
  if (k.name === 'logloss')
    return `log loss ${f5(k.candidate)} > current ${f5(k.against)} (+${LOGLOSS_TOLERANCE * 100}% allowed: ${f5(k.limit)})`;
  if (k.name === 'auc')
    return `AUC ${f4(k.candidate)} < current ${f4(k.against)} (−${AUC_TOLERANCE} allowed: ${f4(k.limit)})`;
  return `calibration: mean pCTR / observed CTR = ${f4(k.candidate)}, outside 1 ± ${CALIBRATION_BOUND}`;
}

/** pCTR of a contract model for `rows` raw vectors laid out one after another: one onnxruntime run. */
/** A model's figures on the rows, scored by the code the scorer runs (whatever output the model gives). */
async function scoreOn(bytes: Uint8Array, features: FeatureSet, rows: EvaluationRows): Promise<Score> {
  const { auc, logloss, mean_pctr } = await evaluateModel(bytes, features, rows);
  return { auc, logloss, mean_pctr };
}

export interface EvaluationRows {
  x: Float64Array;
  y: Uint8Array;
  time: Float64Array;
}

/**
 * Scores the candidate and the current model (when comparable) on the candidate's evaluation rows and decides.
 * `current` is null when there is none.
 */
export async function compareOnRows(o: {
  candidate: { version: string; bytes: Uint8Array };
  current: { version: string; bytes: Uint8Array } | null;
  evaluation: EvaluationRows;
  features: FeatureSet;
  force?: boolean;
}): Promise<GateDecision> {
  const { candidate, current, evaluation: e, features } = o;
  if (current === null || current.version === candidate.version)
    return decide({ candidate: candidate.version, current: current?.version ?? null, force: o.force });
  const contract = readContract(current.bytes);
  const mismatch = featureMismatch(contract.features, contract.definitionsVersion, features);
  if (mismatch.length)
    return decide({
      candidate: candidate.version,
      current: current.version,
      currentMismatch: mismatch,
      force: o.force,
    });
  const n = e.y.length;
  const iso = (t: number) => new Date(t).toISOString();
  let positives = 0;
  for (const v of e.y) positives += v;
  return decide({
    candidate: candidate.version,
    current: current.version,
    rows: { count: n, positives, from: iso(e.time[0] as number), to: iso(e.time[n - 1] as number) },
    candidateScore: await scoreOn(candidate.bytes, features, e),
    currentScore: await scoreOn(current.bytes, features, e),
    force: o.force,
  });
}

/** The decision as lines for a terminal. */
export function describeDecision(d: GateDecision): string[] {
  const lines = [`gate          ${d.promote ? (d.forced ? 'PROMOTE (forced)' : 'PROMOTE') : 'HOLD'}: ${d.reason}`];
  if (d.candidate_score && d.current_score) {
    lines.push(`                new ${d.candidate}  current ${d.current}`);
    for (const k of d.checks) {
      const fmt = k.name === 'logloss' ? f5 : f4;
      const against = k.name === 'calibration' ? `1 ± ${CALIBRATION_BOUND}` : fmt(k.against);
      const label = k.name === 'calibration' ? 'pCTR/CTR' : k.name === 'auc' ? 'AUC' : 'log loss';
      lines.push(
        `  ${label.padEnd(11)}  ${fmt(k.candidate).padStart(17)}  ${against.padStart(20)}  ${k.pass ? 'ok' : 'FAIL'}`,
      );
    }
  }
  return lines;
}

/** The gate's decision for a trained model against the registry's current one. */
export async function judge(
  registry: ModelRegistry,
  candidate: { bytes: Uint8Array; evaluation: EvaluationRows },
  features: FeatureSet,
  force?: boolean,
): Promise<GateDecision> {
  const current = await registry.current();
  return compareOnRows({
    candidate: { version: modelVersion(candidate.bytes), bytes: candidate.bytes },
    current: current === null ? null : { version: current, bytes: await registry.read(current) },
    evaluation: candidate.evaluation,
    features,
    force,
  });
}

/**
 * Registers a model with the decision in its run record and promotes it when the decision says so; without a
 * decision it becomes current only when there is none.
 */
export async function registerDecided(
  registry: ModelRegistry,
  bytes: Uint8Array,
  run: TrainingRun,
  decision?: GateDecision,
): Promise<{ version: string; before: string | null; promoted: boolean }> {
  const before = await registry.current();
  const version = await registry.register(bytes, decision ? { ...run, gate: decision } : run);
  const promoted = decision ? decision.promote : before === null;
  if (promoted) await registry.promote(version);
  return { version, before, promoted };
}
