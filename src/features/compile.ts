// Compiles feature groups: each aggregation's series (one per tile width), its windows' slots, the features they
// give and how those are finished. Pure: stores implement UpdateSink (update.ts) and answer ReadRequests
// (read-plan.ts).
import { createHash } from 'node:crypto';
import { Assembler, type Finish, finishOf } from './assemble.ts';
import type { Aggregation, FeatureGroup, Source } from './define.ts';
import type { KeyFields } from './entities.ts';
import { type Op, opOf } from './ops/index.ts';
import type { ReadPlan, ReadResult } from './read-plan.ts';
import { ReadPlanner } from './read-plan.ts';
import type { Window } from './window.ts';

export type FeatureKind = Aggregation['op'] | 'ratio';

export interface FeatureSpec {
  readonly name: string;
  readonly entity: string;
  readonly kind: FeatureKind;
  readonly window: string;
  /** The value when the entity has no data in the window. */
  readonly default: number;
}

export interface Series {
  /** Short, stable id used in stored field names: "<aggregation index>.<tile seconds>". */
  readonly id: string;
  readonly agg: Aggregation;
  /** The aggregation's op unit (ops/). */
  readonly op: Op<Aggregation>;
  readonly tileMs: number;
  /** Tiles the longest window on this series reads. */
  readonly maxTiles: number;
  readonly windows: readonly Window[];
}

export interface Slot {
  readonly series: number;
  readonly window: Window;
  readonly feature: number;
  /** Numeric series: tiles per read field (the whole window: a read asks one total per window). */
  readonly block: number;
  /**
   * Where a read answers this window: numeric series, values[at, at + window.tiles / block) (its stored fields);
   * distinct, setCounts[at].
   */
  readonly at: number;
}

export interface CompiledGroup {
  readonly group: FeatureGroup;
  /** The group's features are names[start, start + width): slots' first, then ratios'. */
  readonly start: number;
  readonly width: number;
  readonly minTileMs: number;
  readonly series: readonly Series[];
  readonly slots: readonly Slot[];
  readonly ratios: readonly { feature: number; num: number; den: number; rate: number; weight: number }[];
  /** The slots and ratios flattened for finishGroup, which every read ends in. */
  readonly finish: Finish;
}

function compileGroup(group: FeatureGroup, features: FeatureSpec[]): CompiledGroup {
  const start = features.length;
  const series: Series[] = [];
  const slots: Slot[] = [];
  const slotOf = new Map<string, number>();
  group.aggregations.forEach((agg, ai) => {
    const tileWidths = [...new Set(agg.windows.map((w) => w.tileMs))];
    for (const tileMs of tileWidths) {
      const windows = agg.windows.filter((w) => w.tileMs === tileMs);
      series.push({
        id: `${ai}.${tileMs / 1000}`,
        agg,
        op: opOf(agg),
        tileMs,
        windows,
        maxTiles: Math.max(...windows.map((w) => w.tiles)),
      });
    }
    for (const w of agg.windows) {
      const s = series.findIndex((x) => x.agg === agg && x.tileMs === w.tileMs);
      slotOf.set(`${agg.name}/${w.name}`, slots.length);
      slots.push({ series: s, window: w, feature: features.length, block: w.tiles, at: 0 });
      features.push({
        name: `${group.entity.name}__${agg.name}_${w.name}`,
        entity: group.entity.name,
        kind: agg.op,
        window: w.name,
        default: opOf(agg).defaultValue(agg, w),
      });
    }
  });
  // A read answers numeric windows and distinct windows in slot order, each in its own list.
  let numeric = 0;
  let distinct = 0;
  slots.forEach((slot, i) => {
    const sets = (series[slot.series] as Series).op.merge === 'union';
    slots[i] = { ...slot, at: sets ? distinct++ : numeric };
    if (!sets) numeric += slot.window.tiles / slot.block;
  });
  const ratios: CompiledGroup['ratios'][number][] = [];
  for (const r of group.ratios) {
    const num = group.aggregations.find((a) => a.name === r.numerator) as Aggregation;
    for (const w of num.windows) {
      ratios.push({
        feature: features.length,
        num: slotOf.get(`${r.numerator}/${w.name}`) as number,
        den: slotOf.get(`${r.denominator}/${w.name}`) as number,
        rate: r.prior.rate,
        weight: r.prior.weight,
      });
      features.push({
        name: `${group.entity.name}__${r.name}_${w.name}`,
        entity: group.entity.name,
        kind: 'ratio',
        window: w.name,
        default: r.prior.rate,
      });
    }
  }
  const minTileMs = Math.min(...series.map((x) => x.tileMs));
  for (const x of series)
    if (x.tileMs % minTileMs !== 0)
      throw new Error(`${group.entity.name}: tile widths must be multiples of the smallest`);
  const finish = finishOf(series, slots, ratios);
  return { group, start, width: features.length - start, minTileMs, series, slots, ratios, finish };
}

/**
 * The compiled feature set: the single meaning of every feature, for streaming, backfill and scoring. Its jobs live
 * in modules of their own (update.ts, read-plan.ts, assemble.ts); it holds them together.
 */
export class FeatureSet {
  readonly features: readonly FeatureSpec[];
  readonly names: readonly string[];
  /** Changes whenever any definition changes: models and training sets record it. */
  readonly version: string;
  /** How long stored tiles stay useful: the longest window plus one tile. */
  readonly retentionMs: number;
  /** The compiled groups: what other stores (e.g. the replay's tile rings) derive their layout from. */
  readonly groups: readonly CompiledGroup[];
  /** Per source, the series its events update, grouped by group in group order. */
  readonly bySource: Record<Source, readonly { group: number; index: number; series: Series }[]>;
  private readonly planner: ReadPlanner;
  private readonly assembler: Assembler;

  constructor(groups: readonly FeatureGroup[]) {
    const names = new Set<string>();
    for (const g of groups) {
      if (names.has(g.entity.name)) throw new Error(`two feature groups for entity ${g.entity.name}: merge them`);
      names.add(g.entity.name);
    }
    const features: FeatureSpec[] = [];
    this.groups = groups.map((g) => compileGroup(g, features));
    this.features = features;
    this.names = features.map((f) => f.name);
    const bySource: Record<Source, { group: number; index: number; series: Series }[]> = { impression: [], click: [] };
    this.groups.forEach((g, gi) => {
      g.series.forEach((series, index) => {
        bySource[series.agg.source].push({ group: gi, index, series });
      });
    });
    this.bySource = bySource;
    this.planner = new ReadPlanner(this.groups);
    this.assembler = new Assembler(this.groups, features.length);
    this.retentionMs = Math.max(...this.groups.flatMap((g) => g.series.map((s) => (s.maxTiles + 1) * s.tileMs)));
    const canonical = JSON.stringify(groups.map((g) => ({ ...g, entity: g.entity.name })));
    this.version = createHash('sha256').update(canonical).digest('hex').slice(0, 12);
  }

  /** Read requests for every entity the contexts need at time t (read-plan.ts). */
  plan(contexts: readonly KeyFields[], t: number): ReadPlan {
    return this.planner.plan(contexts, t);
  }

  /** Turns the answers to a plan into one vector per context, in `names` order (assemble.ts). */
  assemble(plan: ReadPlan, results: readonly ReadResult[]): Float64Array[] {
    return this.assembler.assemble(plan, results);
  }

  /** The vectors of `assemble`, one after another in `out` (context i at i × names.length). */
  assembleInto(plan: ReadPlan, results: readonly ReadResult[], out: Float64Array): void {
    this.assembler.assembleInto(plan, results, out);
  }
}
