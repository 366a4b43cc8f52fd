// Compiles feature groups into (1) the tile updates an event makes and (2) the reads and arithmetic that turn
// stored tiles into a feature vector at time t. Pure: stores implement UpdateSink and answer ReadRequests.
import { createHash } from 'node:crypto';
import type { AdClick, AdImpression } from '../events/types.ts';
import { getOrCreate } from '../util/map.ts';
import type { Aggregation, FeatureGroup, OnlineLayout, Source } from './define.ts';
import { entityKey, type KeyFields } from './entities.ts';
import { firstReadTile, firstTile, tileOf, type Window } from './window.ts';

export type FeatureKind = Aggregation['op'] | 'ratio';

export interface FeatureSpec {
  readonly name: string;
  readonly entity: string;
  readonly kind: FeatureKind;
  readonly window: string;
  /** The value when the entity has no data in the window. */
  readonly default: number;
}

/**
 * Where tile updates go. Keys are entity keys; fields are "<series>:<tile>". Online stores keep them in the online
 * layout instead (FeatureSet.forEachStoredRun); the offline store records them as they are.
 */
export interface UpdateSink {
  incr(key: string, field: string, delta: number): void;
  max(key: string, field: string, value: number): void;
  /** Adds a member to the set named `field` of entity `key`. */
  sadd(key: string, field: string, member: string): void;
}

/** One entity's reads at one time: numeric fields (null when absent) and unions of sets to count. */
export interface ReadRequest {
  readonly key: string;
  readonly fields: readonly string[];
  readonly sets: readonly (readonly string[])[];
}
export interface ReadResult {
  values: readonly (number | null)[];
  setCounts: readonly number[];
  /** The same object answers many reads (a cache's row) and never changes: assembly keeps its features. */
  readonly shared?: boolean;
}

export interface Series {
  /** Short, stable id used in stored field names: "<aggregation index>.<tile seconds>". */
  readonly id: string;
  readonly agg: Aggregation;
  readonly tileMs: number;
  /** Tiles the longest window on this series reads. */
  readonly maxTiles: number;
  readonly windows: readonly Window[];
}

export interface Slot {
  readonly series: number;
  readonly window: Window;
  readonly feature: number;
  /** Numeric series: tiles per stored field (the whole window, or 1: the group's OnlineLayout). */
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

/** How a slot's aggregate becomes its feature. */
const AS_IS = 0;
const SCALED = 1;
const AGE = 2;

interface Finish {
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

function finishOf(series: readonly Series[], slots: readonly Slot[], ratios: CompiledGroup['ratios']): Finish {
  const aggOf = (slot: Slot) => (series[slot.series] as Series).agg;
  return {
    op: Int8Array.from(slots, (s) => {
      const op = aggOf(s).op;
      return op === 'sum' ? SCALED : op === 'last_seen' ? AGE : AS_IS;
    }),
    param: Float64Array.from(slots, (s) => {
      const agg = aggOf(s);
      return agg.op === 'sum' ? agg.scale : s.window.lengthMs / 1000;
    }),
    feature: Int32Array.from(slots, (s) => s.feature),
    ratioFeature: Int32Array.from(ratios, (r) => r.feature),
    num: Int32Array.from(ratios, (r) => r.num),
    den: Int32Array.from(ratios, (r) => r.den),
    prior: Float64Array.from(ratios, (r) => r.rate * r.weight),
    weight: Float64Array.from(ratios, (r) => r.weight),
  };
}

type SourceEvent = AdImpression | AdClick;

/**
 * What one event adds to its tile of a series: the delta (count; sum in 1/scale units), the member (distinct), the
 * event time (last_seen, kept as the tile's maximum); null when the event has no value for the column.
 */
export function updateOf(agg: Aggregation, e: SourceEvent): number | string | null {
  switch (agg.op) {
    case 'count':
      return 1;
    case 'sum': {
      const v = (e as AdImpression)[agg.column];
      return v == null ? null : Math.round(v * agg.scale);
    }
    case 'distinct':
      return e[agg.column];
    case 'last_seen':
      return e.event_time;
  }
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
        tileMs,
        windows,
        maxTiles: Math.max(...windows.map((w) => w.tiles)),
      });
    }
    for (const w of agg.windows) {
      const s = series.findIndex((x) => x.agg === agg && x.tileMs === w.tileMs);
      slotOf.set(`${agg.name}/${w.name}`, slots.length);
      const block = group.online === 'tiles' ? 1 : w.tiles;
      slots.push({ series: s, window: w, feature: features.length, block, at: 0 });
      features.push({
        name: `${group.entity.name}__${agg.name}_${w.name}`,
        entity: group.entity.name,
        kind: agg.op,
        window: w.name,
        default: agg.op === 'last_seen' ? w.lengthMs / 1000 : 0,
      });
    }
  });
  // A read answers numeric windows and distinct windows in slot order, each in its own list.
  let numeric = 0;
  let distinct = 0;
  slots.forEach((slot, i) => {
    const op = (series[slot.series] as Series).agg.op;
    slots[i] = { ...slot, at: op === 'distinct' ? distinct++ : numeric };
    if (op !== 'distinct') numeric += slot.window.tiles / slot.block;
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

/** The compiled feature set: the single meaning of every feature, for streaming, backfill and scoring. */
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
  /** Every stored field prefix of the online layout (forEachStoredRun), with its entity and tile width. */
  readonly stored: readonly StoredPrefix[];
  /** Per group, its slots' aggregates while assembling (reused: assembly allocates only the vectors). */
  private readonly scratch: Float64Array[];
  /**
   * While assembling, each read entity's group features: in `finished` from `finishedAt`, or a memo's (sourceOf).
   * Grown as plans need, reused.
   */
  private finished = new Float64Array(1024);
  private finishedAt = new Int32Array(64);
  private readonly sourceOf: Float64Array[] = [];
  /** Group features of shared results (a read cache's rows), made once, and the time they were made for. */
  private readonly memo = new WeakMap<ReadResult, { t: number; values: Float64Array }>();
  /** Per group, whether its features depend on the read time beyond the stored values (last_seen). */
  private readonly timed: boolean[];
  /** Per entity name, per numeric series id: the field prefix of each block size its windows store. */
  private readonly storedPrefixes = new Map<string, Map<string, { prefix: string; block: number }[]>>();

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
    this.scratch = this.groups.map((g) => new Float64Array(g.slots.length));
    this.timed = this.groups.map((g) => g.series.some((s) => s.agg.op === 'last_seen'));
    const bySource: Record<Source, { group: number; index: number; series: Series }[]> = { impression: [], click: [] };
    this.groups.forEach((g, gi) => {
      g.series.forEach((series, index) => {
        bySource[series.agg.source].push({ group: gi, index, series });
      });
    });
    this.bySource = bySource;
    const stored: StoredPrefix[] = [];
    for (const g of this.groups) {
      const bySeries = new Map<string, { prefix: string; block: number }[]>();
      g.slots.forEach((slot) => {
        const x = g.series[slot.series] as Series;
        if (x.agg.op === 'distinct') return;
        const blocks = getOrCreate(bySeries, x.id, () => []);
        if (blocks.some((b) => b.block === slot.block)) return;
        const prefix = storedPrefix(x, slot.block);
        blocks.push({ prefix, block: slot.block });
        stored.push({ entity: g.group.entity.name, online: g.group.online, prefix, tileMs: x.tileMs });
      });
      this.storedPrefixes.set(g.group.entity.name, bySeries);
    }
    this.stored = stored;
    this.retentionMs = Math.max(...this.groups.flatMap((g) => g.series.map((s) => (s.maxTiles + 1) * s.tileMs)));
    // The online layout is storage, not meaning: models and training sets stay valid across it.
    const canonical = JSON.stringify(groups.map((g) => ({ ...g, entity: g.entity.name, online: undefined })));
    this.version = createHash('sha256').update(canonical).digest('hex').slice(0, 12);
  }

  /** The last layout per group: consecutive reads mostly fall in the same smallest tile and share it. */
  private readonly layoutCache: { tile: number; layout: Layout }[] = [];
  /** Plans made so far: numbers each, marking the kept requests it took. */
  private plans = 0;

  private layoutAt(i: number, g: CompiledGroup, t: number): Layout {
    // Tile widths are multiples of the group's smallest one and aligned to the epoch, so the same smallest tile
    // means the same tiles for every series.
    const tile = tileOf(t, g.minTileMs);
    const cached = this.layoutCache[i];
    if (cached?.tile === tile) return cached.layout;
    const fresh = { tile, layout: layout(g, t) };
    this.layoutCache[i] = fresh;
    return fresh.layout;
  }

  /** Writes the tile updates one admitted event makes. */
  apply(source: Source, e: SourceEvent, sink: UpdateSink): void {
    let lastGroup = -1;
    let key = '';
    for (const { group, series } of this.bySource[source]) {
      if (group !== lastGroup) {
        key = entityKey((this.groups[group] as CompiledGroup).group.entity, e);
        lastGroup = group;
      }
      const update = updateOf(series.agg, e);
      if (update === null) continue;
      const field = `${series.id}:${tileOf(e.event_time, series.tileMs)}`;
      if (typeof update === 'string') sink.sadd(key, field, update);
      else if (series.agg.op === 'last_seen') sink.max(key, field, update);
      else sink.incr(key, field, update);
    }
  }

  /**
   * The online stores' layout. A window of n tiles is kept in blocks of b tiles (b = n or 1, the group's
   * OnlineLayout): field "<series>.<b>:<r>" holds the total of tiles r-b … r-1, so a read at tile r sums the n/b
   * fields r, r-b, …, r-n+b (the boundary rule, window.ts), and an update to tile k counts towards the fields
   * k+1 … k+b. For the update of `field` (a "<series>:<tile>" of entity `key`), calls `visit` once per block size
   * with the field prefix and that run: fields prefix + first … prefix + (first + count - 1). None for sets
   * (distinct counts keep per-tile sets, unioned at read).
   */
  forEachStoredRun(key: string, field: string, visit: (prefix: string, first: number, count: number) => void): void {
    const colon = field.lastIndexOf(':');
    const blocks = this.storedPrefixes.get(key.slice(0, key.indexOf(':')))?.get(field.slice(0, colon));
    if (!blocks) throw new Error(`no numeric series for field ${field} of ${key}`);
    const first = firstReadTile(Number(field.slice(colon + 1)));
    for (const { prefix, block } of blocks) visit(prefix, first, block);
  }

  /**
   * Many updates of one entity at once (a batch's `incr` or `max` fields), as forEachStoredRun's runs merged per
   * window: each stored field is visited once, in segments of consecutive read tiles with the same combined value.
   * Overlapping runs (several tiles of a series in one batch) would otherwise touch the same fields many times.
   */
  forEachStoredSegment(
    key: string,
    updates: ReadonlyMap<string, number>,
    combine: 'sum' | 'max',
    visit: (prefix: string, first: number, count: number, value: number) => void,
  ): void {
    const byPrefix = new Map<string, { first: number; end: number; value: number }[]>();
    for (const [field, value] of updates)
      this.forEachStoredRun(key, field, (prefix, first, count) => {
        const runs = byPrefix.get(prefix);
        const run = { first, end: first + count, value };
        if (runs) runs.push(run);
        else byPrefix.set(prefix, [run]);
      });
    for (const [prefix, runs] of byPrefix) {
      if (runs.length === 1) {
        const { first, end, value } = runs[0] as (typeof runs)[number];
        visit(prefix, first, end - first, value);
        continue;
      }
      const cuts = [...new Set(runs.flatMap((r) => [r.first, r.end]))].sort((a, b) => a - b);
      for (let c = 0; c + 1 < cuts.length; c++) {
        const at = cuts[c] as number;
        let value: number | undefined;
        for (const r of runs) {
          if (r.first > at || r.end <= at) continue;
          value = value === undefined ? r.value : combine === 'sum' ? value + r.value : Math.max(value, r.value);
        }
        if (value !== undefined) visit(prefix, at, (cuts[c + 1] as number) - at, value);
      }
    }
  }

  /** Read requests for every entity the contexts need at time t, deduplicated (one round trip for all). */
  plan(contexts: readonly KeyFields[], t: number): ReadPlan {
    const groups = this.groups.length;
    const requests: ReadRequest[] = [];
    const groupOf: number[] = [];
    const refs = new Int32Array(contexts.length * groups);
    const plan = ++this.plans;
    for (let gi = 0; gi < groups; gi++) {
      const g = this.groups[gi] as CompiledGroup;
      const l = this.layoutAt(gi, g, t);
      const fields = g.group.entity.fields;
      const last = fields.length - 1;
      if (l.kept >= MAX_KEPT_REQUESTS) {
        l.requests.clear();
        l.kept = 0;
      }
      let r = -1;
      for (let ci = 0; ci < contexts.length; ci++) {
        const ctx = contexts[ci] as KeyFields;
        // A context with the same entity as the one before (a ranking's user, say) needs no lookup.
        if (ci > 0 && sameEntity(fields, ctx, contexts[ci - 1] as KeyFields)) {
          refs[ci * groups + gi] = r;
          continue;
        }
        let m = l.requests;
        for (let f = 0; f < last; f++)
          m = getOrCreate(m, ctx[fields[f] as keyof KeyFields], () => new Map()) as typeof m;
        const value = ctx[fields[last] as keyof KeyFields];
        let request = m.get(value) as KeptRequest | undefined;
        if (request === undefined) {
          request = { key: entityKey(g.group.entity, ctx), fields: l.fields, sets: l.sets, plan: 0, at: 0 };
          m.set(value, request);
          l.kept++;
        }
        if (request.plan !== plan) {
          request.plan = plan;
          request.at = requests.length;
          requests.push(request);
          groupOf.push(gi);
        }
        r = request.at;
        refs[ci * groups + gi] = r;
      }
    }
    return { t, contexts: contexts.length, requests, groupOf, refs };
  }

  /** Turns the answers to a plan into one vector per context, in `names` order. */
  assemble(plan: ReadPlan, results: readonly ReadResult[]): Float64Array[] {
    const n = this.features.length;
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
    const n = this.features.length;
    const requests = plan.requests.length;
    if (this.finishedAt.length < requests) this.finishedAt = new Int32Array(requests * 2);
    // Room in `finished` for the results not shared (a shared one's features are its memo's).
    let size = 0;
    for (let r = 0; r < requests; r++) {
      this.finishedAt[r] = size;
      if (!(results[r] as ReadResult).shared) size += (this.groups[plan.groupOf[r] as number] as CompiledGroup).width;
    }
    if (this.finished.length < size) this.finished = new Float64Array(size * 2);
    const { finished, finishedAt, sourceOf } = this;
    for (let r = 0; r < requests; r++) {
      const gi = plan.groupOf[r] as number;
      const g = this.groups[gi] as CompiledGroup;
      const res = results[r] as ReadResult;
      const scratch = this.scratch[gi] as Float64Array;
      if (!res.shared) {
        fillGroup(g, plan.t, res, finished, (finishedAt[r] as number) - g.start, scratch);
        sourceOf[r] = finished;
        continue;
      }
      let m = this.memo.get(res);
      if (m === undefined || (m.t !== plan.t && this.timed[gi])) {
        m = { t: plan.t, values: new Float64Array(g.width) };
        fillGroup(g, plan.t, res, m.values, -g.start, scratch);
        this.memo.set(res, m);
      }
      sourceOf[r] = m.values;
      finishedAt[r] = 0;
    }
    for (let ci = 0; ci < plan.contexts; ci++) {
      for (let gi = 0; gi < groups; gi++) {
        const g = this.groups[gi] as CompiledGroup;
        const r = plan.refs[ci * groups + gi] as number;
        const from = sourceOf[r] as Float64Array;
        const at = finishedAt[r] as number;
        const to = ci * n + g.start;
        for (let k = 0; k < g.width; k++) out[to + k] = from[at + k] as number;
      }
    }
    sourceOf.length = 0;
  }
}

export interface StoredPrefix {
  readonly entity: string;
  readonly online: OnlineLayout;
  readonly prefix: string;
  readonly tileMs: number;
}

export interface ReadPlan {
  readonly t: number;
  readonly contexts: number;
  readonly requests: readonly ReadRequest[];
  /** The group each request reads. */
  readonly groupOf: readonly number[];
  /** refs[context * groups + group] = index of the request that answers it. */
  readonly refs: Int32Array;
}

interface Layout {
  fields: string[];
  sets: string[][];
  /**
   * The requests plans made at this layout, by the entity's field values (a Map per field), reused by later plans
   * while the layout lasts: an entity read again needs no new key string (making and hashing one per candidate and
   * group was most of a plan's time), and stores find its key hashed already.
   */
  requests: Map<string, unknown>;
  kept: number;
}

/** A request a layout keeps, with where the plan that last took it has it (no lookup to deduplicate). */
interface KeptRequest extends ReadRequest {
  plan: number;
  at: number;
}

/** Requests a layout keeps at most (then it starts over): bounds memory for numerous entities such as users. */
const MAX_KEPT_REQUESTS = 50_000;

/**
 * Field names a group reads at t: per numeric window, its stored blocks for t's tile (one field, or one per tile);
 * per distinct window, its tiles' sets.
 */
function layout(g: CompiledGroup, t: number): Layout {
  const fields: string[] = [];
  const sets: string[][] = [];
  for (const slot of g.slots) {
    const s = g.series[slot.series] as Series;
    if (s.agg.op !== 'distinct') {
      const prefix = storedPrefix(s, slot.block);
      const r = tileOf(t, s.tileMs);
      for (let j = 0; j < slot.window.tiles; j += slot.block) fields.push(prefix + (r - j));
      continue;
    }
    const first = firstTile(t, slot.window);
    sets.push(Array.from({ length: slot.window.tiles }, (_, i) => `${s.id}:${first + i}`));
  }
  return { fields, sets, requests: new Map(), kept: 0 };
}

function sameEntity(fields: readonly (keyof KeyFields)[], a: KeyFields, b: KeyFields): boolean {
  for (let i = 0; i < fields.length; i++)
    if (a[fields[i] as keyof KeyFields] !== b[fields[i] as keyof KeyFields]) return false;
  return true;
}

function storedPrefix(s: Series, block: number): string {
  return `${s.id}.${block}:`;
}

/** A group's features from one read into v[at + feature] (see finishGroup). */
function fillGroup(g: CompiledGroup, t: number, res: ReadResult, v: Float64Array, at: number, raw: Float64Array): void {
  for (let si = 0; si < g.slots.length; si++) {
    const slot = g.slots[si] as Slot;
    const op = (g.series[slot.series] as Series).agg.op;
    if (op === 'distinct') {
      raw[si] = res.setCounts[slot.at] as number;
      continue;
    }
    const end = slot.at + slot.window.tiles / slot.block;
    let x = op === 'last_seen' ? Number.NEGATIVE_INFINITY : 0;
    for (let i = slot.at; i < end; i++) {
      const value = res.values[i];
      if (value != null) x = op === 'last_seen' ? Math.max(x, value) : x + value;
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
