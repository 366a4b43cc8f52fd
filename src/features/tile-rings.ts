// The replay's feature state, built for speed from the compiled FeatureSet (same series, slots, updates and
// boundary rule; no feature is declared here). Each event's key and distinct columns are interned once into
// dense ids shared by all groups, and entity instances are numbered by those ids (no key strings); per group, one
// record per entity in two typed-array slabs holds, per series, a ring of tiles and, per window, its running
// total at the tile last read (the cursor). A read at the cursor's tile copies the totals; another tile slides
// them by the tiles that enter and leave. Exact distinct counts keep each tile's members and count a window's at
// read time (rarely: reads mostly fall in the cursor's tile, and only a late member there recounts). Rings start
// small (most entities are sparse: a few events per day) and those that must span more move to their own, larger
// arrays.
import type { AdClick, AdImpression } from '../events/types.ts';
import { type CompiledGroup, type FeatureSet, finishGroup, type Series, updateOf } from './compile.ts';
import type { Source } from './define.ts';
import { type EntityIndex, PairIndex, SingleIndex } from './entity-index.ts';
import { firstTile, tileOf } from './window.ts';

type SourceEvent = AdImpression | AdClick;

const EMPTY = -2147483648;

/** Where one entity's ring of one series is: tile T sits at base + (T & mask) when tags[that] === T. */
interface View {
  tags: Int32Array;
  tagBase: number;
  values: Float64Array;
  valueBase: number;
  mask: number;
  /** A distinct series: each tile's value is the head of its member list (MemberLists), not a number to add. */
  distinct: boolean;
}

interface GroupLayout {
  readonly g: CompiledGroup;
  /** The entity's fields, as indices into TileRings.columns (the only one twice for one-field entities). */
  readonly keys: Int32Array;
  readonly index: EntityIndex;
  entities: number;
  /** Per entity: the tags of every series' ring. */
  tags: Int32Array;
  /** Per entity: every series' ring values, then the cursor per series, then the total per slot. */
  values: Float64Array;
  readonly tagStride: number;
  readonly valueStride: number;
  readonly ringOffset: Int32Array;
  readonly ringSize: Int32Array;
  readonly cursorOffset: number;
  readonly totalOffset: number;
  /**
   * Rings that outgrew the slab live in the pool (tags and values at the same offsets), found by entity * series
   * count + series in ringOf: [offset + 1 (0 while in the slab), size - 1]. Space a ring grew out of is reused by
   * later rings of its size (free, by log2 size).
   */
  ringOf: Int32Array;
  poolTags: Int32Array;
  poolValues: Float64Array;
  poolUsed: number;
  readonly free: number[][];
  /** Per series: its slots; and the newest tile ever dropped from any of its rings (needing it again is an error). */
  readonly slotsOf: readonly number[][];
  readonly lostUpTo: number[];
  /** Per slot: its window's length in tiles. */
  readonly tiles: Int32Array;
  /** Per series: for distinct, the index into TileRings.columns of its members' column; else -1. */
  readonly memberColumn: Int32Array;
  readonly raw: Float64Array;
}

function pow2AtLeast(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** Tiles a ring holds before it first grows. */
const INITIAL_RING = 4;

export class TileRings {
  private readonly layouts: GroupLayout[];
  /** The event columns that key entities or hold distinct members, and per column its values' ids. */
  private readonly columns: readonly (keyof SourceEvent)[];
  private readonly dictionaries: Map<string, number>[];
  /** The ids of the event being processed, per column. */
  private readonly ids: Int32Array;
  /** Entity of each group for the event being processed (resolved once per event). */
  private readonly current: Int32Array;
  private readonly view: View = {
    tags: new Int32Array(0),
    tagBase: 0,
    values: new Float64Array(0),
    valueBase: 0,
    mask: 0,
    distinct: false,
  };
  private readonly members = new MemberLists();

  /**
   * `lowWatermark()` is the lowest event time any future read or update can have (the replay's lowest partition
   * watermark): tiles older than it by a whole window are never needed again and may be overwritten.
   */
  constructor(
    readonly features: FeatureSet,
    allowedLatenessMs: number,
    private readonly lowWatermark: () => number,
  ) {
    const columns: (keyof SourceEvent)[] = [];
    const column = (name: keyof SourceEvent) => {
      if (!columns.includes(name)) columns.push(name);
      return columns.indexOf(name);
    };
    this.layouts = features.groups.map((g) => {
      // Within one partition, reads and updates stay within the lateness of the newest tile, so a ring that spans
      // it never grows; most entities need far less, and start smaller.
      const ringSize = Int32Array.from(g.series, (s) =>
        Math.min(INITIAL_RING, pow2AtLeast(s.maxTiles + Math.ceil(allowedLatenessMs / s.tileMs) + 2)),
      );
      const ringOffset = new Int32Array(g.series.length);
      let size = 0;
      g.series.forEach((_, s) => {
        ringOffset[s] = size;
        size += ringSize[s] as number;
      });
      return {
        g,
        keys: Int32Array.of(
          column(g.group.entity.fields[0] as keyof SourceEvent),
          column(g.group.entity.fields.at(-1) as keyof SourceEvent),
        ),
        index: g.group.entity.fields.length === 1 ? new SingleIndex() : new PairIndex(),
        entities: 0,
        tags: new Int32Array(0),
        values: new Float64Array(0),
        tagStride: size,
        valueStride: size + g.series.length + g.slots.length,
        ringOffset,
        ringSize,
        cursorOffset: size,
        totalOffset: size + g.series.length,
        ringOf: new Int32Array(0),
        poolTags: new Int32Array(0),
        poolValues: new Float64Array(0),
        poolUsed: 0,
        free: [],
        slotsOf: g.series.map((_, s) => g.slots.flatMap((slot, i) => (slot.series === s ? [i] : []))),
        lostUpTo: g.series.map(() => EMPTY),
        tiles: Int32Array.from(g.slots, (slot) => slot.window.tiles),
        memberColumn: Int32Array.from(g.series, (s) => (s.agg.op === 'distinct' ? column(s.agg.column) : -1)),
        raw: new Float64Array(g.slots.length),
      };
    });
    for (const { group } of features.groups)
      if (group.entity.fields.length > 2) throw new Error(`${group.entity.name}: entities have at most two fields`);
    this.columns = columns;
    this.dictionaries = columns.map(() => new Map());
    this.ids = new Int32Array(columns.length);
    this.current = new Int32Array(this.layouts.length);
  }

  /**
   * Reads the vector of `e` at its event time into `out` (when given), then applies `e`'s updates. Reading first
   * keeps the point-in-time rule; the event's own tile is outside every window anyway.
   */
  step(source: Source, e: SourceEvent, out: Float64Array | null): void {
    const ids = this.ids;
    for (let c = 0; c < ids.length; c++) {
      const dictionary = this.dictionaries[c] as Map<string, number>;
      const value = e[this.columns[c] as keyof SourceEvent] as string;
      let id = dictionary.get(value);
      if (id === undefined) {
        id = dictionary.size;
        dictionary.set(value, id);
      }
      ids[c] = id;
    }
    for (let gi = 0; gi < this.layouts.length; gi++) {
      const layout = this.layouts[gi] as GroupLayout;
      const next = layout.entities;
      const ent = layout.index.get(
        ids[layout.keys[0] as number] as number,
        ids[layout.keys[1] as number] as number,
        next,
      );
      if (ent === next) newEntity(layout);
      this.current[gi] = ent;
    }
    if (out) this.read(e.event_time, out);
    const updates = this.features.bySource[source];
    for (let i = 0; i < updates.length; i++) {
      const { group, index, series } = updates[i] as (typeof updates)[number];
      const update = updateOf(series.agg, e);
      if (update === null) continue;
      const layout = this.layouts[group] as GroupLayout;
      const ent = this.current[group] as number;
      const tile = tileOf(e.event_time, series.tileMs);
      if (typeof update === 'string') {
        this.addMember(layout, ent, index, tile, ids[layout.memberColumn[index] as number] as number);
      } else {
        this.addValue(layout, ent, index, series, tile, update);
      }
    }
  }

  /** Points this.view at entity ent's ring of series s. */
  private locate(layout: GroupLayout, ent: number, s: number): View {
    const v = this.view;
    const key = ent * layout.ringSize.length + s;
    const pooled = layout.ringOf[2 * key] as number;
    if (pooled !== 0) {
      v.tags = layout.poolTags;
      v.tagBase = pooled - 1;
      v.values = layout.poolValues;
      v.valueBase = pooled - 1;
      v.mask = layout.ringOf[2 * key + 1] as number;
    } else {
      const offset = layout.ringOffset[s] as number;
      v.tags = layout.tags;
      v.tagBase = ent * layout.tagStride + offset;
      v.values = layout.values;
      v.valueBase = ent * layout.valueStride + offset;
      v.mask = (layout.ringSize[s] as number) - 1;
    }
    v.distinct = (layout.memberColumn[s] as number) >= 0;
    return v;
  }

  /** The view position of `tile`, taking it over from an older tile that is no longer needed, or growing. */
  private claim(layout: GroupLayout, ent: number, s: number, tile: number): number {
    for (;;) {
      const v = this.locate(layout, ent, s);
      const at = tile & v.mask;
      const held = v.tags[v.tagBase + at] as number;
      if (held === tile) return at;
      if (tile <= (layout.lostUpTo[s] as number)) lost(layout, s, tile);
      if (held === EMPTY) {
        v.tags[v.tagBase + at] = tile;
        return at;
      }
      const series = layout.g.series[s] as Series;
      if (held < tile && held < tileOf(this.lowWatermark(), series.tileMs) - series.maxTiles) {
        // Never read or updated again; the totals at the cursor may include it, so the next read recomputes them.
        layout.values[ent * layout.valueStride + layout.cursorOffset + s] = Number.NaN;
        if (held > (layout.lostUpTo[s] as number)) layout.lostUpTo[s] = held;
        v.tags[v.tagBase + at] = tile;
        if (v.distinct) this.members.release(v.values[v.valueBase + at] as number);
        v.values[v.valueBase + at] = 0;
        return at;
      }
      grow(layout, ent * layout.ringSize.length + s, v);
    }
  }

  private addValue(layout: GroupLayout, ent: number, s: number, series: Series, tile: number, x: number) {
    const at = this.claim(layout, ent, s, tile);
    const { values, valueBase } = this.view;
    if (series.agg.op === 'last_seen') {
      // Read by scanning, no totals. A fresh tile holds 0, below any event time.
      if (x > (values[valueBase + at] as number)) values[valueBase + at] = x;
      return;
    }
    values[valueBase + at] = (values[valueBase + at] as number) + x;
    const base = ent * layout.valueStride;
    const c = layout.values[base + layout.cursorOffset + s] as number;
    if (!(tile < c)) return; // also when there is no cursor
    const slots = layout.slotsOf[s] as number[];
    for (let k = 0; k < slots.length; k++) {
      const si = slots[k] as number;
      const total = base + layout.totalOffset + si;
      if (tile >= c - (layout.tiles[si] as number)) layout.values[total] = (layout.values[total] as number) + x;
    }
  }

  private addMember(layout: GroupLayout, ent: number, s: number, tile: number, id: number) {
    const at = this.claim(layout, ent, s, tile);
    const { values, valueBase } = this.view;
    const head = values[valueBase + at] as number;
    const added = this.members.add(head, id);
    if (added === head) return;
    values[valueBase + at] = added;
    // A new member inside the windows at the cursor: their counts are recounted at the next read.
    const cursorAt = ent * layout.valueStride + layout.cursorOffset + s;
    const c = layout.values[cursorAt] as number;
    if (tile < c && tile >= c - (layout.g.series[s] as Series).maxTiles) layout.values[cursorAt] = Number.NaN;
  }

  private read(t: number, out: Float64Array): void {
    for (let gi = 0; gi < this.layouts.length; gi++) {
      const layout = this.layouts[gi] as GroupLayout;
      const ent = this.current[gi] as number;
      const { g, raw } = layout;
      const base = ent * layout.valueStride;
      for (let s = 0; s < g.series.length; s++) {
        const series = g.series[s] as Series;
        const cur = tileOf(t, series.tileMs);
        const slots = layout.slotsOf[s] as number[];
        if (series.agg.op === 'last_seen') {
          const v = this.locate(layout, ent, s);
          for (let k = 0; k < slots.length; k++) {
            const si = slots[k] as number;
            raw[si] = latest(v, cur, firstTile(t, (g.slots[si] as CompiledGroup['slots'][number]).window));
          }
          continue;
        }
        if (layout.values[base + layout.cursorOffset + s] !== cur) this.moveTo(layout, ent, s, t, cur);
        for (let k = 0; k < slots.length; k++) {
          const si = slots[k] as number;
          raw[si] = layout.values[base + layout.totalOffset + si] as number;
        }
      }
      finishGroup(g, t, raw, out);
    }
  }

  /** Brings series s's window totals from the cursor's tile to `cur` (t's tile). */
  private moveTo(layout: GroupLayout, ent: number, s: number, t: number, cur: number): void {
    const v = this.locate(layout, ent, s);
    const cursorAt = ent * layout.valueStride + layout.cursorOffset + s;
    const c = layout.values[cursorAt] as number;
    const slots = layout.slotsOf[s] as number[];
    for (let k = 0; k < slots.length; k++) {
      const si = slots[k] as number;
      const w = (layout.g.slots[si] as CompiledGroup['slots'][number]).window;
      const lo = firstTile(t, w);
      if (lo <= (layout.lostUpTo[s] as number)) lost(layout, s, lo);
      const total = ent * layout.valueStride + layout.totalOffset + si;
      if (v.distinct) {
        // Distinct counts do not slide: they are recounted from the window's member lists.
        layout.values[total] = this.members.countDistinct(v, lo, cur);
      } else if (Number.isNaN(c) || Math.abs(cur - c) >= w.tiles) {
        layout.values[total] = 0;
        include(layout, ent, si, v, lo, cur, 1);
      } else if (cur > c) {
        include(layout, ent, si, v, c - w.tiles, lo, -1);
        include(layout, ent, si, v, c, cur, 1);
      } else {
        include(layout, ent, si, v, cur, c, -1);
        include(layout, ent, si, v, lo, c - w.tiles, 1);
      }
    }
    layout.values[cursorAt] = cur;
  }
}

/** Makes room for the group's next entity: empty rings, no cursor. */
function newEntity(layout: GroupLayout): void {
  const ent = layout.entities++;
  if (layout.entities * layout.tagStride > layout.tags.length) {
    const capacity = Math.max(1024, layout.entities * 2);
    const tags = new Int32Array(capacity * layout.tagStride);
    tags.set(layout.tags);
    tags.fill(EMPTY, layout.tags.length);
    const values = new Float64Array(capacity * layout.valueStride);
    values.set(layout.values);
    const ringOf = new Int32Array(2 * capacity * layout.ringSize.length);
    ringOf.set(layout.ringOf);
    layout.tags = tags;
    layout.values = values;
    layout.ringOf = ringOf;
  }
  const cursors = ent * layout.valueStride + layout.cursorOffset;
  layout.values.fill(Number.NaN, cursors, cursors + layout.ringSize.length);
}

/** Moves the ring in view (ring `key`) to the pool, twice its size (live tiles, distinct modulo the old size, stay so). */
function grow(layout: GroupLayout, key: number, v: View): void {
  const size = (v.mask + 1) * 2;
  const at = allocate(layout, size);
  const { poolTags, poolValues } = layout;
  for (let i = 0; i <= v.mask; i++) {
    const tag = v.tags[v.tagBase + i] as number;
    if (tag === EMPTY) continue;
    poolTags[at + (tag & (size - 1))] = tag;
    poolValues[at + (tag & (size - 1))] = v.values[v.valueBase + i] as number;
  }
  const pooled = layout.ringOf[2 * key] as number;
  if (pooled !== 0) {
    const bySize = Math.log2(v.mask + 1);
    const free = layout.free[bySize] ?? [];
    free.push(pooled - 1);
    layout.free[bySize] = free;
  }
  layout.ringOf[2 * key] = at + 1;
  layout.ringOf[2 * key + 1] = size - 1;
}

/** Pool space for an empty ring of `size` tiles (a power of two). */
function allocate(layout: GroupLayout, size: number): number {
  const reused = layout.free[Math.log2(size)]?.pop();
  if (reused !== undefined) {
    layout.poolTags.fill(EMPTY, reused, reused + size);
    layout.poolValues.fill(0, reused, reused + size);
    return reused;
  }
  const at = layout.poolUsed;
  layout.poolUsed += size;
  if (layout.poolUsed > layout.poolTags.length) {
    const capacity = Math.max(4096, layout.poolUsed * 2);
    const tags = new Int32Array(capacity);
    tags.set(layout.poolTags);
    tags.fill(EMPTY, layout.poolTags.length);
    const values = new Float64Array(capacity);
    values.set(layout.poolValues);
    layout.poolTags = tags;
    layout.poolValues = values;
  }
  return at;
}

function lost(layout: GroupLayout, s: number, tile: number): never {
  throw new Error(
    `${layout.g.group.entity.name} series ${(layout.g.series[s] as Series).id}: tile ${tile} was needed after it ` +
      'was dropped (a partition started far behind the others); give the replay its partition count',
  );
}

/** Adds (sign 1) or removes (sign -1) the tiles [from, to) in view to slot si's window total. */
function include(layout: GroupLayout, ent: number, si: number, v: View, from: number, to: number, sign: 1 | -1) {
  const total = ent * layout.valueStride + layout.totalOffset + si;
  let x = layout.values[total] as number;
  if (to - from <= v.mask) {
    for (let tile = from; tile < to; tile++) {
      const at = tile & v.mask;
      if (v.tags[v.tagBase + at] === tile) x += sign * (v.values[v.valueBase + at] as number);
    }
  } else {
    // More tiles than the ring holds: visit the ring instead (EMPTY is below any tile).
    for (let at = 0; at <= v.mask; at++) {
      const tag = v.tags[v.tagBase + at] as number;
      if (tag >= from && tag < to) x += sign * (v.values[v.valueBase + at] as number);
    }
  }
  layout.values[total] = x;
}

/**
 * The members of distinct series' tiles: per tile a list without repeats, as linked nodes in one typed pool
 * (no object per tile or per member). A list is named by its head node + 1, 0 for the empty list: what the
 * tile's value holds. Counts over a window are taken at read time, marking members in a scratch array.
 */
class MemberLists {
  private member = new Int32Array(4096);
  /** Per node: the next node + 1 (0: the list ends), or the next free node + 1. */
  private next = new Int32Array(4096);
  private used = 0;
  private free = 0;
  /** Per member id: the mark of the last count it was seen in. */
  private seen = new Int32Array(1024);
  private mark = 0;

  /** List `head` with m (the same head when m is in it already). */
  add(head: number, m: number): number {
    for (let n = head; n !== 0; n = this.next[n - 1] as number) if (this.member[n - 1] === m) return head;
    let node = this.free - 1;
    if (node >= 0) this.free = this.next[node] as number;
    else {
      node = this.used++;
      if (node === this.member.length) {
        this.member = grown(this.member, node * 2);
        this.next = grown(this.next, node * 2);
      }
    }
    this.member[node] = m;
    this.next[node] = head;
    return node + 1;
  }

  /** Frees list `head`'s nodes for reuse. */
  release(head: number): void {
    if (head === 0) return;
    let last = head - 1;
    while (this.next[last] !== 0) last = (this.next[last] as number) - 1;
    this.next[last] = this.free;
    this.free = head;
  }

  /** How many distinct members the lists of the tiles [from, to) in view hold together. */
  countDistinct(v: View, from: number, to: number): number {
    const mark = ++this.mark;
    let count = 0;
    if (to - from <= v.mask) {
      for (let tile = from; tile < to; tile++) {
        const at = tile & v.mask;
        if (v.tags[v.tagBase + at] === tile) count += this.unseen(v.values[v.valueBase + at] as number, mark);
      }
    } else {
      for (let at = 0; at <= v.mask; at++) {
        const tag = v.tags[v.tagBase + at] as number;
        if (tag >= from && tag < to) count += this.unseen(v.values[v.valueBase + at] as number, mark);
      }
    }
    return count;
  }

  /** Marks list `head`'s members; returns how many were not marked yet. */
  private unseen(head: number, mark: number): number {
    let count = 0;
    for (let n = head; n !== 0; n = this.next[n - 1] as number) {
      const m = this.member[n - 1] as number;
      if (m >= this.seen.length) this.seen = grown(this.seen, Math.max(m + 1, this.seen.length * 2));
      if (this.seen[m] === mark) continue;
      this.seen[m] = mark;
      count++;
    }
    return count;
  }
}

function grown(a: Int32Array<ArrayBuffer>, length: number): Int32Array<ArrayBuffer> {
  const b = new Int32Array(length);
  b.set(a);
  return b;
}

/** The latest event time in [lo, cur) in view: the newest written tile holds it (tiles are ordered in time). */
function latest(v: View, cur: number, lo: number): number {
  if (cur - lo <= v.mask) {
    for (let tile = cur - 1; tile >= lo; tile--)
      if (v.tags[v.tagBase + (tile & v.mask)] === tile) return v.values[v.valueBase + (tile & v.mask)] as number;
    return Number.NEGATIVE_INFINITY;
  }
  // More tiles than the ring holds: the ring's newest tile in range.
  let newest = -1;
  for (let at = 0; at <= v.mask; at++) {
    const tag = v.tags[v.tagBase + at] as number;
    if (tag >= lo && tag < cur && (newest < 0 || tag > (v.tags[v.tagBase + newest] as number))) newest = at;
  }
  return newest < 0 ? Number.NEGATIVE_INFINITY : (v.values[v.valueBase + newest] as number);
}
