// The replay's feature state, built for speed from the compiled FeatureSet (same series, slots, updates and
// boundary rule; no feature is declared here): per entity instance (interned on its raw ids, no key strings) and
// per series, a ring of tiles in typed arrays, plus each window's running total at the tile last read. A read at
// the same tile as the previous one is a copy of the totals; a later (or earlier) tile slides them by the tiles
// that enter and leave. Exact distinct counts keep, per window, how many of its tiles hold each member.
import type { AdClick, AdImpression } from '../events/types.ts';
import { type CompiledGroup, type FeatureSet, finishGroup, type Series, updateOf } from './compile.ts';
import type { Source } from './define.ts';
import type { KeyFields } from './entities.ts';
import { firstTile, tileOf } from './window.ts';

const EMPTY = -2147483648;
const NO_CURSOR = Number.NaN;

/** One entity's tiles of one series: tile T sits at T & (size - 1) when tags[that] === T. */
interface Ring {
  tags: Int32Array;
  values: Float64Array;
  /** Distinct series: the members of each tile. */
  members: (Set<number> | undefined)[] | null;
}

interface EntityState {
  readonly rings: Ring[];
  /** Per series, the tile of the last read: the window totals below are for windows ending there. */
  readonly cursor: Float64Array;
  /** Per slot: the window's total (count, sum) or distinct count at the cursor. */
  readonly totals: Float64Array;
  /** Per distinct slot: how many of the window's tiles hold each member. */
  readonly occurrences: (Map<number, number> | null)[];
}

interface GroupLayout {
  readonly g: CompiledGroup;
  readonly fields: readonly (keyof KeyFields)[];
  /** Entity states by first id (then by second id for two-field entities). */
  readonly states: Map<string, EntityState | Map<string, EntityState>>;
  /** Per series: its slots, and the newest tile ever evicted from any of its rings (reads below it are lost). */
  readonly slotsOf: readonly number[][];
  readonly lostUpTo: number[];
  readonly initialSize: number[];
  /** Distinct series: member ids by value. */
  readonly memberIds: (Map<string, number> | null)[];
  /** Per slot: its window's length in tiles. */
  readonly tiles: Int32Array;
  readonly raw: Float64Array;
}

function pow2AtLeast(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

export class TileRings {
  private readonly layouts: GroupLayout[];
  /** Entity state of each group for the event being processed (resolved once per event). */
  private readonly current: EntityState[];

  /**
   * `lowWatermark()` is the lowest event time any future read or update can have (the replay's lowest partition
   * watermark): tiles older than it by a whole window are never needed again and may be overwritten.
   */
  constructor(
    readonly features: FeatureSet,
    allowedLatenessMs: number,
    private readonly lowWatermark: () => number,
  ) {
    this.layouts = features.groups.map((g) => ({
      g,
      fields: g.group.entity.fields,
      states: new Map(),
      slotsOf: g.series.map((_, s) => g.slots.flatMap((slot, i) => (slot.series === s ? [i] : []))),
      lostUpTo: g.series.map(() => EMPTY),
      // Within one partition, reads and updates stay within the lateness of the newest tile.
      initialSize: g.series.map((s) => pow2AtLeast(s.maxTiles + Math.ceil(allowedLatenessMs / s.tileMs) + 2)),
      memberIds: g.series.map((s) => (s.agg.op === 'distinct' ? new Map<string, number>() : null)),
      tiles: Int32Array.from(g.slots, (slot) => slot.window.tiles),
      raw: new Float64Array(g.slots.length),
    }));
    this.current = new Array(this.layouts.length);
  }

  /**
   * Reads the vector of `e` at its event time into `out` (when given), then applies `e`'s updates. Reading first
   * keeps the point-in-time rule; the event's own tile is outside every window anyway.
   */
  step(source: Source, e: AdImpression | AdClick, out: Float64Array | null): void {
    for (let gi = 0; gi < this.layouts.length; gi++) this.current[gi] = this.entity(this.layouts[gi] as GroupLayout, e);
    if (out) this.read(e.event_time, out);
    const updates = this.features.bySource[source];
    for (let i = 0; i < updates.length; i++) {
      const { group, index, series } = updates[i] as (typeof updates)[number];
      const update = updateOf(series.agg, e);
      if (update === null) continue;
      const layout = this.layouts[group] as GroupLayout;
      const state = this.current[group] as EntityState;
      const tile = tileOf(e.event_time, series.tileMs);
      if (typeof update === 'string') {
        const ids = layout.memberIds[index] as Map<string, number>;
        let id = ids.get(update);
        if (id === undefined) {
          id = ids.size;
          ids.set(update, id);
        }
        this.addMember(layout, state, index, tile, id);
      } else {
        this.addValue(layout, state, index, series, tile, update);
      }
    }
  }

  private entity(layout: GroupLayout, e: KeyFields): EntityState {
    const first = e[layout.fields[0] as keyof KeyFields];
    let s = layout.states.get(first);
    if (layout.fields.length === 1) {
      if (s === undefined) {
        s = this.newState(layout);
        layout.states.set(first, s);
      }
      return s as EntityState;
    }
    if (s === undefined) {
      s = new Map<string, EntityState>();
      layout.states.set(first, s);
    }
    const byFirst = s as Map<string, EntityState>;
    const second = e[layout.fields[1] as keyof KeyFields];
    let state = byFirst.get(second);
    if (state === undefined) {
      state = this.newState(layout);
      byFirst.set(second, state);
    }
    return state;
  }

  private newState(layout: GroupLayout): EntityState {
    const { g } = layout;
    return {
      rings: g.series.map((s, i) => newRing(layout.initialSize[i] as number, s.agg.op === 'distinct')),
      cursor: new Float64Array(g.series.length).fill(NO_CURSOR),
      totals: new Float64Array(g.slots.length),
      occurrences: g.slots.map((slot) =>
        (g.series[slot.series] as Series).agg.op === 'distinct' ? new Map<number, number>() : null,
      ),
    };
  }

  /** The ring position of `tile`, taking it over from an older tile that is no longer needed, or growing. */
  private claim(layout: GroupLayout, state: EntityState, s: number, tile: number): number {
    for (;;) {
      const ring = state.rings[s] as Ring;
      const at = tile & (ring.tags.length - 1);
      const held = ring.tags[at] as number;
      if (held === tile) return at;
      if (tile <= (layout.lostUpTo[s] as number)) lost(layout, s, tile);
      if (held === EMPTY) {
        ring.tags[at] = tile;
        return at;
      }
      const series = layout.g.series[s] as Series;
      if (held < tile && held < tileOf(this.lowWatermark(), series.tileMs) - series.maxTiles) {
        // Never read or updated again; the totals at the cursor may include it, so the next read recomputes them.
        state.cursor[s] = NO_CURSOR;
        if (held > (layout.lostUpTo[s] as number)) layout.lostUpTo[s] = held;
        ring.tags[at] = tile;
        ring.values[at] = 0;
        if (ring.members) ring.members[at] = undefined;
        return at;
      }
      state.rings[s] = grow(ring);
    }
  }

  private addValue(layout: GroupLayout, state: EntityState, s: number, series: Series, tile: number, x: number) {
    const ring = state.rings[s] as Ring;
    const fresh = ring.tags[tile & (ring.tags.length - 1)] !== tile;
    const at = this.claim(layout, state, s, tile);
    const values = (state.rings[s] as Ring).values;
    if (series.agg.op === 'last_seen') {
      if (fresh || x > (values[at] as number)) values[at] = x;
      return; // read by scanning, no totals
    }
    values[at] = (values[at] as number) + x;
    const c = state.cursor[s] as number;
    if (!(tile < c)) return; // also when there is no cursor
    const slots = layout.slotsOf[s] as number[];
    for (let k = 0; k < slots.length; k++) {
      const si = slots[k] as number;
      if (tile >= c - (layout.tiles[si] as number)) state.totals[si] = (state.totals[si] as number) + x;
    }
  }

  private addMember(layout: GroupLayout, state: EntityState, s: number, tile: number, id: number) {
    const at = this.claim(layout, state, s, tile);
    const members = (state.rings[s] as Ring).members as (Set<number> | undefined)[];
    let set = members[at];
    if (set === undefined) {
      set = new Set();
      members[at] = set;
    }
    if (set.has(id)) return;
    set.add(id);
    const c = state.cursor[s] as number;
    if (!(tile < c)) return;
    const slots = layout.slotsOf[s] as number[];
    for (let k = 0; k < slots.length; k++) {
      const si = slots[k] as number;
      if (tile >= c - (layout.tiles[si] as number)) enterOne(state, si, id);
    }
  }

  private read(t: number, out: Float64Array): void {
    for (let gi = 0; gi < this.layouts.length; gi++) {
      const layout = this.layouts[gi] as GroupLayout;
      const state = this.current[gi] as EntityState;
      const { g, raw } = layout;
      for (let s = 0; s < g.series.length; s++) {
        const series = g.series[s] as Series;
        const cur = tileOf(t, series.tileMs);
        if (series.agg.op === 'last_seen') {
          for (const si of layout.slotsOf[s] as number[]) raw[si] = latest(state.rings[s] as Ring, cur, t, g, si);
          continue;
        }
        if (state.cursor[s] !== cur) this.moveTo(layout, state, s, t, cur);
        for (const si of layout.slotsOf[s] as number[]) raw[si] = state.totals[si] as number;
      }
      finishGroup(g, t, raw, out);
    }
  }

  /** Brings series s's window totals from the cursor's tile to `cur` (t's tile). */
  private moveTo(layout: GroupLayout, state: EntityState, s: number, t: number, cur: number): void {
    const ring = state.rings[s] as Ring;
    const c = state.cursor[s] as number;
    for (const si of layout.slotsOf[s] as number[]) {
      const w = (layout.g.slots[si] as (typeof layout.g.slots)[number]).window;
      const lo = firstTile(t, w);
      if (lo <= (layout.lostUpTo[s] as number)) lost(layout, s, lo);
      if (Number.isNaN(c) || Math.abs(cur - c) >= w.tiles) {
        state.totals[si] = 0;
        state.occurrences[si]?.clear();
        for (let tile = lo; tile < cur; tile++) include(state, si, ring, tile, 1);
      } else if (cur > c) {
        for (let tile = c - w.tiles; tile < lo; tile++) include(state, si, ring, tile, -1);
        for (let tile = c; tile < cur; tile++) include(state, si, ring, tile, 1);
      } else {
        for (let tile = cur; tile < c; tile++) include(state, si, ring, tile, -1);
        for (let tile = lo; tile < c - w.tiles; tile++) include(state, si, ring, tile, 1);
      }
    }
    state.cursor[s] = cur;
  }
}

function newRing(size: number, distinct: boolean): Ring {
  return {
    tags: new Int32Array(size).fill(EMPTY),
    values: new Float64Array(size),
    members: distinct ? new Array(size).fill(undefined) : null,
  };
}

/** Twice the room; live tiles are distinct modulo the old size, so they are modulo the new one. */
function grow(ring: Ring): Ring {
  const next = newRing(ring.tags.length * 2, ring.members !== null);
  const mask = next.tags.length - 1;
  ring.tags.forEach((tag, i) => {
    if (tag === EMPTY) return;
    next.tags[tag & mask] = tag;
    next.values[tag & mask] = ring.values[i] as number;
    if (ring.members && next.members) next.members[tag & mask] = ring.members[i];
  });
  return next;
}

function lost(layout: GroupLayout, s: number, tile: number): never {
  throw new Error(
    `${layout.g.group.entity.name} series ${(layout.g.series[s] as Series).id}: tile ${tile} was needed after it ` +
      'was dropped (a partition started far behind the others); replay its partitions closer together in time',
  );
}

/** Adds (sign 1) or removes (sign -1) a tile's contribution to slot si's window total. */
function include(state: EntityState, si: number, ring: Ring, tile: number, sign: 1 | -1): void {
  const at = tile & (ring.tags.length - 1);
  if (ring.tags[at] !== tile) return;
  if (ring.members) {
    const set = ring.members[at];
    if (set) (sign > 0 ? enter : leave)(state, si, set);
  } else {
    state.totals[si] = (state.totals[si] as number) + sign * (ring.values[at] as number);
  }
}

function enter(state: EntityState, si: number, members: Iterable<number>): void {
  for (const m of members) enterOne(state, si, m);
}

function enterOne(state: EntityState, si: number, m: number): void {
  const occ = state.occurrences[si] as Map<number, number>;
  const n = occ.get(m) ?? 0;
  occ.set(m, n + 1);
  if (n === 0) state.totals[si] = (state.totals[si] as number) + 1;
}

function leave(state: EntityState, si: number, members: Iterable<number>): void {
  const occ = state.occurrences[si] as Map<number, number>;
  for (const m of members) {
    const n = occ.get(m) as number;
    if (n === 1) {
      occ.delete(m);
      state.totals[si] = (state.totals[si] as number) - 1;
    } else occ.set(m, n - 1);
  }
}

/** The latest event time in slot si's window at t: the newest written tile holds it (tiles are ordered in time). */
function latest(ring: Ring, cur: number, t: number, g: CompiledGroup, si: number): number {
  const lo = firstTile(t, (g.slots[si] as CompiledGroup['slots'][number]).window);
  const mask = ring.tags.length - 1;
  for (let tile = cur - 1; tile >= lo; tile--)
    if (ring.tags[tile & mask] === tile) return ring.values[tile & mask] as number;
  return Number.NEGATIVE_INFINITY;
}
