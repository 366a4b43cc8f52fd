// Evaluation of click probabilities: ranking (AUC), probability quality (log loss), calibration by bucket, and a
// paired bootstrap of the AUC difference between two scorers on the same rows. Pure.
import { Rng } from '../events/random.ts';

/** Row indices ordered by score, ascending (ties in row order, so results do not depend on sort stability). */
function orderBy(scores: Float64Array): Uint32Array {
  return Uint32Array.from(scores.keys()).sort((a, b) => (scores[a] as number) - (scores[b] as number) || a - b);
}

/** Weighted AUC over rows in ascending score order; tied scores count half. */
function aucOrdered(order: Uint32Array, scores: Float64Array, y: Uint8Array, w?: Float64Array): number {
  let negBelow = 0;
  let area = 0;
  let pos = 0;
  let i = 0;
  while (i < order.length) {
    const s = scores[order[i] as number] as number;
    let p = 0;
    let n = 0;
    for (; i < order.length && scores[order[i] as number] === s; i++) {
      const r = order[i] as number;
      const weight = w ? (w[r] as number) : 1;
      if (y[r] === 1) p += weight;
      else n += weight;
    }
    area += p * (negBelow + n / 2);
    negBelow += n;
    pos += p;
  }
  return pos === 0 || negBelow === 0 ? Number.NaN : area / (pos * negBelow);
}

export function auc(scores: Float64Array, y: Uint8Array): number {
  return aucOrdered(orderBy(scores), scores, y);
}

export function logloss(p: Float64Array, y: Uint8Array): number {
  let total = 0;
  for (let i = 0; i < y.length; i++) {
    const q = Math.min(Math.max(p[i] as number, 1e-15), 1 - 1e-15);
    total -= y[i] === 1 ? Math.log(q) : Math.log(1 - q);
  }
  return total / y.length;
}

export interface CalibrationBucket {
  /** Range of predicted probabilities in the bucket. */
  from: number;
  to: number;
  rows: number;
  /** Mean predicted probability and observed click rate. */
  predicted: number;
  observed: number;
}

/** Equal-count buckets by predicted probability (CTRs are skewed, so equal-width buckets would be mostly empty). */
export function calibration(p: Float64Array, y: Uint8Array, buckets = 10): CalibrationBucket[] {
  const order = orderBy(p);
  const out: CalibrationBucket[] = [];
  for (let b = 0; b < buckets; b++) {
    const lo = Math.floor((b * order.length) / buckets);
    const hi = Math.floor(((b + 1) * order.length) / buckets);
    if (hi <= lo) continue;
    let predicted = 0;
    let observed = 0;
    for (let i = lo; i < hi; i++) {
      const r = order[i] as number;
      predicted += p[r] as number;
      observed += y[r] as number;
    }
    out.push({
      from: p[order[lo] as number] as number,
      to: p[order[hi - 1] as number] as number,
      rows: hi - lo,
      predicted: predicted / (hi - lo),
      observed: observed / (hi - lo),
    });
  }
  return out;
}

/**
 * Paired Poisson bootstrap of AUC(a) − AUC(b): each resample weighs every row by a Poisson(1) draw, the same
 * weights for both scorers. Returns the 2.5% and 97.5% quantiles of the difference.
 */
export function aucLiftInterval(
  a: Float64Array,
  b: Float64Array,
  y: Uint8Array,
  seed: number,
  resamples = 200,
): [number, number] {
  const orderA = orderBy(a);
  const orderB = orderBy(b);
  const rng = new Rng(seed);
  const w = new Float64Array(y.length);
  const diffs: number[] = [];
  for (let k = 0; k < resamples; k++) {
    for (let i = 0; i < w.length; i++) w[i] = poisson1(rng);
    diffs.push(aucOrdered(orderA, a, y, w) - aucOrdered(orderB, b, y, w));
  }
  diffs.sort((x, z) => x - z);
  const at = (q: number) => diffs[Math.min(diffs.length - 1, Math.floor(q * diffs.length))] as number;
  return [at(0.025), at(0.975)];
}

/** A Poisson(1) draw by inversion. */
function poisson1(rng: Rng): number {
  let u = rng.next();
  let k = 0;
  let term = Math.exp(-1);
  while (u > term && k < 20) {
    u -= term;
    k++;
    term /= k;
  }
  return k;
}
