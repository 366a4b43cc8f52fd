// Assembly: the answers to a read plan become one vector per context, every feature finished in one place
// (finishGroup), whichever store answered.
import type { CompiledGroup, Series, Slot } from './compile.ts';
import type { ReadPlan, ReadResult } from './read-plan.ts';

/** How a slot's aggregate becomes its feature. */
const AS_IS = 0;
const SCALED = 1;
const AGE = 2;

export interface Finish {
  /** Per slot: AS_IS, SCALED (divided by param: the sum's scale) or AGE (seconds before t; param when none). */
  readonly op: Int8Array;
  readonly param: Float64Array;
  readonly feature: Int32Array;
  /** Per ratio: its feature, numerator and denominator slots, rate × weight and weight. */
  readonly ratioFeature: Int32Array;
  readonly num: Int32Array;
  readonly den: Int32Array;
  readonly prior: Float64Array;
  readonly weight: Float64Array;
}

const FINISH_CODE = { 'as-is': AS_IS, scaled: SCALED, age: AGE } as const;

export function finishOf(series: readonly Series[], slots: readonly Slot[], ratios: CompiledGroup['ratios']): Finish {
  const seriesOf = (slot: Slot) => series[slot.series] as Series;
  return {
    op: Int8Array.from(slots, (s) => FINISH_CODE[seriesOf(s).op.finish]),
    param: Float64Array.from(slots, (s) => seriesOf(s).op.finishParam(seriesOf(s).agg, s.window)),
    feature: Int32Array.from(slots, (s) => s.feature),
    ratioFeature: Int32Array.from(ratios, (r) => r.feature),
    num: Int32Array.from(ratios, (r) => r.num),
    den: Int32Array.from(ratios, (r) => r.den),
    prior: Float64Array.from(ratios, (r) => r.rate * r.weight),
    weight: Float64Array.from(ratios, (r) => r.weight),
  };
}

/** Assembles vectors for compiled groups, reusing its buffers between calls. */
export class Assembler {
  /** Per group, its slots' aggregates while assembling (reused: assembly allocates only the vectors). */
  private readonly scratch: Float64Array[];
  /**
   * Every read entity's group features while assembling, side by side (one array: copying them out touches no
   * per-result object): shared results' stay from `used` down, made once per `epoch` (see memo); the others' are
   * written past them for one call. Grown as plans need; when full, the epoch ends and shared ones are made again.
   */
  private arena = new Float64Array(1 << 16);
  private used = 0;
  private epoch = 0;
  /** Per request of the plan being assembled, where its group features start in `arena`. */
  private finishedAt = new Int32Array(64);
  /** Per group, whether its features depend on the read time beyond the stored values (an age). */
  private readonly timed: boolean[];

  constructor(
    private readonly groups: readonly CompiledGroup[],
    private readonly featureCount: number,
  ) {
    this.scratch = groups.map((g) => new Float64Array(g.slots.length));
    this.timed = groups.map((g) => g.series.some((s) => s.op.finish === 'age'));
  }

  /** Turns the answers to a plan into one vector per context, in `names` order. */
  assemble(plan: ReadPlan, results: readonly ReadResult[]): Float64Array[] {
    const n = this.featureCount;
    const all = new Float64Array(plan.contexts * n);
    this.assembleInto(plan, results, all);
    return Array.from({ length: plan.contexts }, (_, ci) => all.subarray(ci * n, (ci + 1) * n));
  }

  /**
   * The vectors of `assemble`, one after another in `out` (context i at i × names.length). Each read entity's
   * group features are made once and copied to every context that shares it (a ranking's user serves all its
   * candidates).
   */
  assembleInto(plan: ReadPlan, results: readonly ReadResult[], out: Float64Array): void {
    const groups = this.groups.length;
    const n = this.featureCount;
    const requests = plan.requests.length;
    if (this.finishedAt.length < requests) this.finishedAt = new Int32Array(requests * 2);
    // Room for every result's features, were none of the shared ones made before.
    let room = 0;
    for (let r = 0; r < requests; r++) room += (this.groups[plan.groupOf[r] as number] as CompiledGroup).width;
    if (this.used + room > this.arena.length) {
      this.epoch++;
      this.used = 0;
      if (room * 2 > this.arena.length) this.arena = new Float64Array(room * 4);
    }
    const { arena, finishedAt } = this;
    let passing = this.used + room;
    for (let r = 0; r < requests; r++) {
      const gi = plan.groupOf[r] as number;
      const g = this.groups[gi] as CompiledGroup;
      const res = results[r] as ReadResult;
      const scratch = this.scratch[gi] as Float64Array;
      if (!res.shared) {
        passing -= g.width;
        fillGroup(g, plan.t, res, arena, passing - g.start, scratch);
        finishedAt[r] = passing;
        continue;
      }
      let m = res.assembled;
      if (m === undefined || m.by !== this || m.epoch !== this.epoch || (m.t !== plan.t && this.timed[gi])) {
        m = { by: this, epoch: this.epoch, t: plan.t, at: this.used };
        this.used += g.width;
        fillGroup(g, plan.t, res, arena, m.at - g.start, scratch);
        res.assembled = m;
      }
      finishedAt[r] = m.at;
    }
    for (let ci = 0; ci < plan.contexts; ci++) {
      for (let gi = 0; gi < groups; gi++) {
        const g = this.groups[gi] as CompiledGroup;
        const at = finishedAt[plan.refs[ci * groups + gi] as number] as number;
        const to = ci * n + g.start;
        for (let k = 0; k < g.width; k++) out[to + k] = arena[at + k] as number;
      }
    }
  }
}

/** A group's features from one read into v[at + feature] (see finishGroup). */
function fillGroup(g: CompiledGroup, t: number, res: ReadResult, v: Float64Array, at: number, raw: Float64Array): void {
  for (let si = 0; si < g.slots.length; si++) {
    const slot = g.slots[si] as Slot;
    const merge = (g.series[slot.series] as Series).op.merge;
    if (merge === 'union') {
      raw[si] = res.setCounts[slot.at] as number;
      continue;
    }
    const end = slot.at + slot.window.tiles / slot.block;
    const max = merge === 'max';
    let x = max ? Number.NEGATIVE_INFINITY : 0;
    for (let i = slot.at; i < end; i++) {
      const value = res.values[i];
      if (value != null) x = max ? Math.max(x, value) : x + value;
    }
    raw[si] = x;
  }
  finishGroup(g, t, raw, v, at);
}

/**
 * Turns a group's per-slot aggregates at t into its features in v (and overwrites `raw` with them): `raw` holds
 * per slot the window's total (count; sum in 1/scale units), latest event time (last_seen; -Infinity when none)
 * or distinct count. Every store's read ends here, so values become features in one place. Feature f goes to
 * v[at + f]: at = 0 for a whole vector.
 */
export function finishGroup(g: CompiledGroup, t: number, raw: Float64Array, v: Float64Array, at = 0): void {
  const { op, param, feature, ratioFeature, num, den, prior, weight } = g.finish;
  for (let si = 0; si < op.length; si++) {
    let x = raw[si] as number;
    if (op[si] === AGE) x = x === Number.NEGATIVE_INFINITY ? (param[si] as number) : (t - x) / 1000;
    else if (op[si] === SCALED) x = x / (param[si] as number);
    raw[si] = x;
    v[at + (feature[si] as number)] = x;
  }
  for (let k = 0; k < ratioFeature.length; k++)
    v[at + (ratioFeature[k] as number)] =
      ((raw[num[k] as number] as number) + (prior[k] as number)) /
      ((raw[den[k] as number] as number) + (weight[k] as number));
}
