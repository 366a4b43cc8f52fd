// L2-regularised logistic regression over the engineered features, fitted by exact Newton steps in float64.
// Pure and deterministic: the same rows and parameters give the same coefficients bit for bit (no randomness,
// fixed summation order). With F ≈ 58 the (F+1)² Hessian is tiny, so Newton converges in a handful of passes.
import type { FeatureKind } from '../features/compile.ts';

/** How a raw feature value enters the model: counts, sums and ages on a log scale, smoothed rates as log-odds. */
export type Transform = 'log1p' | 'logit';

/**
 * Rates are clipped this far inside (0, 1) so a logit is always finite. A power of two, so that both bounds are
 * exact in the graph's float32 and the graph clips exactly where this code does.
 */
export const LOGIT_EPS = 2 ** -20;

export function transformOf(kind: FeatureKind): Transform {
  return kind === 'ratio' ? 'logit' : 'log1p';
}

export function applyTransform(t: Transform, x: number): number {
  if (t === 'log1p') return Math.log(1 + Math.max(x, 0));
  const p = Math.min(Math.max(x, LOGIT_EPS), 1 - LOGIT_EPS);
  return Math.log(p) - Math.log(1 - p);
}

export interface LogisticModel {
  readonly transforms: readonly Transform[];
  /** Training mean of each transformed feature. */
  readonly mean: Float64Array;
  /** 1 / training standard deviation (0 for a constant feature: it carries no information). */
  readonly scale: Float64Array;
  /** Weights on the standardised features. */
  readonly weights: Float64Array;
  readonly bias: number;
}

export interface FitOptions {
  /** Penalty on the standardised weights: objective = mean log loss + l2/2 · ||w||². */
  l2: number;
  maxIterations?: number;
}

export interface FitResult {
  model: LogisticModel;
  iterations: number;
  /** Mean training log loss at the optimum (without the penalty). */
  trainLogloss: number;
}

/** Rows are `x[r * f + j]` (raw values); labels 0/1. */
export function fitLogistic(
  x: Float64Array,
  y: Uint8Array,
  transforms: readonly Transform[],
  o: FitOptions,
): FitResult {
  const f = transforms.length;
  const n = y.length;
  if (n === 0 || x.length !== n * f) throw new Error(`expected ${n} rows of ${f} features, got ${x.length} values`);
  if (!(o.l2 > 0)) throw new RangeError(`l2 must be positive, got ${o.l2}`);
  const positives = y.reduce((a, b) => a + b, 0);
  if (positives === 0 || positives === n) throw new Error('training rows need both clicks and non-clicks');

  // Standardised design matrix, built once.
  const z = new Float64Array(n * f);
  const mean = new Float64Array(f);
  const scale = new Float64Array(f);
  for (let r = 0; r < n; r++)
    for (let j = 0; j < f; j++) {
      const v = applyTransform(transforms[j] as Transform, x[r * f + j] as number);
      z[r * f + j] = v;
      mean[j] = (mean[j] as number) + v;
    }
  for (let j = 0; j < f; j++) mean[j] = (mean[j] as number) / n;
  const variance = new Float64Array(f);
  for (let r = 0; r < n; r++)
    for (let j = 0; j < f; j++) {
      const d = (z[r * f + j] as number) - (mean[j] as number);
      variance[j] = (variance[j] as number) + d * d;
    }
  for (let j = 0; j < f; j++) {
    const sd = Math.sqrt((variance[j] as number) / n);
    scale[j] = sd > 1e-12 ? 1 / sd : 0;
  }
  for (let r = 0; r < n; r++)
    for (let j = 0; j < f; j++) z[r * f + j] = ((z[r * f + j] as number) - (mean[j] as number)) * (scale[j] as number);

  // θ = [w_0 .. w_{f-1}, bias]; start at the base rate.
  const d = f + 1;
  const theta = new Float64Array(d);
  theta[f] = Math.log(positives / (n - positives));
  const eta = new Float64Array(n);
  const objective = (t: Float64Array): number => {
    let loss = 0;
    for (let r = 0; r < n; r++) {
      let e = t[f] as number;
      for (let j = 0; j < f; j++) e += (t[j] as number) * (z[r * f + j] as number);
      eta[r] = e;
      loss += softplus(e) - (y[r] as number) * e;
    }
    let penalty = 0;
    for (let j = 0; j < f; j++) penalty += (t[j] as number) ** 2;
    return loss / n + (o.l2 / 2) * penalty;
  };

  let current = objective(theta);
  const maxIterations = o.maxIterations ?? 50;
  let iterations = 0;
  const grad = new Float64Array(d);
  const hess = new Float64Array(d * d);
  const row = new Float64Array(d);
  row[f] = 1;
  while (iterations < maxIterations) {
    iterations++;
    grad.fill(0);
    hess.fill(0);
    for (let r = 0; r < n; r++) {
      const p = sigmoid(eta[r] as number);
      const g = p - (y[r] as number);
      const h = p * (1 - p);
      for (let j = 0; j < f; j++) row[j] = z[r * f + j] as number;
      for (let a = 0; a < d; a++) {
        const ra = row[a] as number;
        grad[a] = (grad[a] as number) + g * ra;
        const hra = h * ra;
        for (let b = a; b < d; b++) hess[a * d + b] = (hess[a * d + b] as number) + hra * (row[b] as number);
      }
    }
    for (let a = 0; a < d; a++) {
      grad[a] = (grad[a] as number) / n + (a < f ? o.l2 * (theta[a] as number) : 0);
      for (let b = a; b < d; b++) {
        const v = (hess[a * d + b] as number) / n + (a === b && a < f ? o.l2 : 0);
        hess[a * d + b] = v;
        hess[b * d + a] = v;
      }
    }
    const step = solveSymmetric(hess, grad, d);
    // Damped Newton: halve the step until the objective does not increase (it rarely needs to).
    let t = 1;
    const next = new Float64Array(d);
    let value = current;
    for (let halvings = 0; halvings < 30; halvings++, t /= 2) {
      for (let a = 0; a < d; a++) next[a] = (theta[a] as number) - t * (step[a] as number);
      value = objective(next);
      if (value <= current) break;
    }
    if (!(value <= current)) {
      objective(theta); // restore eta for the final loss
      break;
    }
    theta.set(next);
    const improvement = current - value;
    current = value;
    let maxStep = 0;
    for (let a = 0; a < d; a++) maxStep = Math.max(maxStep, Math.abs(t * (step[a] as number)));
    if (maxStep < 1e-9 || improvement < 1e-14) break;
  }

  let trainLoss = 0;
  for (let r = 0; r < n; r++) trainLoss += softplus(eta[r] as number) - (y[r] as number) * (eta[r] as number);
  return {
    model: { transforms, mean, scale, weights: theta.slice(0, f), bias: theta[f] as number },
    iterations,
    trainLogloss: trainLoss / n,
  };
}

/** The model's click probability for one raw feature vector (in the model's feature order). */
export function predict(m: LogisticModel, raw: ArrayLike<number>): number {
  let e = m.bias;
  for (let j = 0; j < m.transforms.length; j++) {
    const v = applyTransform(m.transforms[j] as Transform, raw[j] as number);
    e += (m.weights[j] as number) * (v - (m.mean[j] as number)) * (m.scale[j] as number);
  }
  return sigmoid(e);
}

function sigmoid(e: number): number {
  return e >= 0 ? 1 / (1 + Math.exp(-e)) : Math.exp(e) / (1 + Math.exp(e));
}

/** log(1 + e^x) without overflow. */
function softplus(x: number): number {
  return x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
}

/** Solves A·s = b for symmetric positive definite A (d×d, row-major) by Cholesky. */
function solveSymmetric(a: Float64Array, b: Float64Array, d: number): Float64Array {
  const l = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * d + j] as number;
      for (let k = 0; k < j; k++) s -= (l[i * d + k] as number) * (l[j * d + k] as number);
      if (i === j) {
        if (!(s > 0)) throw new Error('Newton step: Hessian is not positive definite (raise --l2)');
        l[i * d + i] = Math.sqrt(s);
      } else l[i * d + j] = s / (l[j * d + j] as number);
    }
  }
  const s = new Float64Array(d);
  for (let i = 0; i < d; i++) {
    let v = b[i] as number;
    for (let k = 0; k < i; k++) v -= (l[i * d + k] as number) * (s[k] as number);
    s[i] = v / (l[i * d + i] as number);
  }
  for (let i = d - 1; i >= 0; i--) {
    let v = s[i] as number;
    for (let k = i + 1; k < d; k++) v -= (l[k * d + i] as number) * (s[k] as number);
    s[i] = v / (l[i * d + i] as number);
  }
  return s;
}
