// The replay's feature state, built for speed from the compiled FeatureSet (same series, slots, updates and
// boundary rule; no feature is declared here). Each event's key and distinct columns are interned once into
// dense ids shared by all groups, and entity instances are numbered by those ids (no key strings). Per group,
// every entity's series keeps a ring of tiles in one typed-array pool, and one record per entity holds per series
// its cursor (the tile last read) and per window its running total at the cursor. A read at the cursor's tile
// copies the totals; another tile slides them by the tiles that enter and leave. Exact distinct counts keep each
// tile's members and count a window's at read time (rarely: reads mostly fall in the cursor's tile, and only a
// late member there recounts). Rings start small (most entities are sparse: a few events per day) and double
// when they must span more. Per-series facts are flattened into typed arrays: the per-event loops touch no
// definition objects.
import type { AdClick, AdImpression } from '../events/types.ts';
import { type CompiledGroup, type FeatureSet, finishGroup, updateOf } from './compile.ts';
import type { Source } from './define.ts';
import { KEY_FIELDS } from './entities.ts';
import { type EntityIndex, PairIndex, SingleIndex } from './entity-index.ts';
import { tileOf } from './window.ts';

type SourceEvent = AdImpression | AdClick;

const EMPTY = -2147483648;

/** How a series' tiles combine. */
const ADD = 0;
const LATEST = 1;
const DISTINCT = 2;

interface GroupLayout {
  readonly g: CompiledGroup;
  /** The entity's fields, as indices into TileRings.columns (the only one twice for one-field entities). */
  readonly keys: Int32Array;
  readonly index: EntityIndex;
  entities: number;
  /** Per series: ADD, LATEST or DISTINCT; its tile width as an index into TileRings.widths; its longest window. */
  readonly kind: Int8Array;
  readonly width: Int32Array;
  readonly maxTiles: Int32Array;
  /** Per series: for DISTINCT, the index into TileRings.columns of its members' column. */
  readonly memberColumn: Int32Array;
  /** Per series: its slots, slotList[slotStart[s] .. slotStart[s + 1]). */
  readonly slotStart: Int32Array;
  readonly slotList: Int32Array;
  /** Per slot: its window's length in tiles. */
  readonly tiles: Int32Array;
  /** Tiles a series' ring holds before it first grows. */
  readonly ringSize: Int32Array;
  /** Per entity and series (entity * series count + series): its ring's pool offset and size - 1. */
  ringOf: Int32Array;
  /** The ring pool: tile T of a ring at offset o, mask m sits at o + (T & m) when tags[that] === T. */
  tags: Int32Array;
  values: Float64Array;
  poolUsed: number;
  /** Freed ring space by log2 size, reused by rings of that size. */
  readonly free: number[][];
  /** Per entity: the cursor per series (NaN: none, totals to recompute), then the total per slot. */
  state: Float64Array;
  readonly stride: number;
  /** Per series: the newest tile ever dropped from any of its rings (needing it again is an error). */
  readonly lostUpTo: Int32Array;
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
  /** Per column: its index in KEY_FIELDS (ids a source may hand), or -1. */
  private readonly keyOf: Int32Array;
  /** Whether records come with key ids (set by the first). */
  private coded: boolean | undefined;
  /** The ids of the event being processed, per column. */
  private readonly ids: Int32Array;
  /** Entity of each group for the event being processed (resolved once per event). */
  private readonly current: Int32Array;
  /** Every tile width of the set, and the event's tile of each (one division per width, not per series). */
  private readonly widths: readonly number[];
  private readonly tileNow: Float64Array;
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
    const widths = [...new Set(features.groups.flatMap((g) => g.series.map((s) => s.tileMs)))];
    this.layouts = features.groups.map((g) => {
      const slotsOf = g.series.map((_, s) => g.slots.flatMap((slot, i) => (slot.series === s ? [i] : [])));
      const slotStart = new Int32Array(g.series.length + 1);
      slotsOf.forEach((slots, s) => {
        slotStart[s + 1] = (slotStart[s] as number) + slots.length;
      });
      return {
        g,
        keys: Int32Array.of(
          column(g.group.entity.fields[0] as keyof SourceEvent),
          column(g.group.entity.fields.at(-1) as keyof SourceEvent),
        ),
        index: g.group.entity.fields.length === 1 ? new SingleIndex() : new PairIndex(),
        entities: 0,
        kind: Int8Array.from(g.series, (s) =>
          s.agg.op === 'distinct' ? DISTINCT : s.agg.op === 'last_seen' ? LATEST : ADD,
        ),
        width: Int32Array.from(g.series, (s) => widths.indexOf(s.tileMs)),
        maxTiles: Int32Array.from(g.series, (s) => s.maxTiles),
        memberColumn: Int32Array.from(g.series, (s) => (s.agg.op === 'distinct' ? column(s.agg.column) : -1)),
        slotStart,
        slotList: Int32Array.from(slotsOf.flat()),
        tiles: Int32Array.from(g.slots, (slot) => slot.window.tiles),
        // Within one partition, reads and updates stay within the lateness of the newest tile, so a ring that
        // spans it never grows; most entities need far less, and start smaller.
        ringSize: Int32Array.from(g.series, (s) =>
          Math.min(INITIAL_RING, pow2AtLeast(s.maxTiles + Math.ceil(allowedLatenessMs / s.tileMs) + 2)),
        ),
        ringOf: new Int32Array(0),
        tags: new Int32Array(0),
        values: new Float64Array(0),
        poolUsed: 0,
        free: [],
        state: new Float64Array(0),
        stride: g.series.length + g.slots.length,
        lostUpTo: new Int32Array(g.series.length).fill(EMPTY),
        raw: new Float64Array(g.slots.length),
      };
    });
    for (const { group } of features.groups)
      if (group.entity.fields.length > 2) throw new Error(`${group.entity.name}: entities have at most two fields`);
    this.columns = columns;
    this.dictionaries = columns.map(() => new Map());
    this.keyOf = Int32Array.from(columns, (c) => (KEY_FIELDS as readonly string[]).indexOf(c));
    this.ids = new Int32Array(columns.length);
    this.current = new Int32Array(this.layouts.length);
    this.widths = widths;
    this.tileNow = new Float64Array(widths.length);
  }

  /**
   * Reads the vector of `e` at its event time into `out` (when given), then applies `e`'s updates. Reading first
   * keeps the point-in-time rule; the event's own tile is outside every window anyway.
   */
  step(source: Source, e: SourceEvent, out: Float64Array | null, keyIds?: Int32Array, keyIdsAt = 0): void {
    const ids = this.ids;
    this.coded ??= keyIds !== undefined;
    if ((keyIds !== undefined) !== this.coded) throw new Error('a replay takes key ids with every record or with none');
    for (let c = 0; c < ids.length; c++) {
      const key = this.keyOf[c] as number;
      if (keyIds !== undefined && key >= 0) {
        ids[c] = keyIds[keyIdsAt + key] as number;
        continue;
      }
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
      if (ent === next) this.newEntity(layout);
      this.current[gi] = ent;
    }
    const t = e.event_time;
    for (let w = 0; w < this.widths.length; w++) this.tileNow[w] = tileOf(t, this.widths[w] as number);
    if (out) this.read(t, out);
    const updates = this.features.bySource[source];
    for (let i = 0; i < updates.length; i++) {
      const { group, index: s, series } = updates[i] as (typeof updates)[number];
      const update = updateOf(series.agg, e);
      if (update === null) continue;
      const layout = this.layouts[group] as GroupLayout;
      const ent = this.current[group] as number;
      const tile = this.tileNow[layout.width[s] as number] as number;
      if (typeof update === 'string')
        this.addMember(layout, ent, s, tile, ids[layout.memberColumn[s] as number] as number);
      else this.addValue(layout, ent, s, tile, update);
    }
  }

  /** Makes room for the group's next entity: its rings empty, no cursor. */
  private newEntity(layout: GroupLayout): void {
    const ent = layout.entities++;
    const n = layout.ringSize.length;
    if (layout.entities * layout.stride > layout.state.length) {
      const capacity = Math.max(1024, layout.entities * 2);
      const state = new Float64Array(capacity * layout.stride);
      state.set(layout.state);
      layout.state = state;
      const ringOf = new Int32Array(2 * capacity * n);
      ringOf.set(layout.ringOf);
      layout.ringOf = ringOf;
    }
    for (let s = 0; s < n; s++) {
      const size = layout.ringSize[s] as number;
      layout.ringOf[2 * (ent * n + s)] = this.allocate(layout, size);
      layout.ringOf[2 * (ent * n + s) + 1] = size - 1;
    }
    const base = ent * layout.stride;
    layout.state.fill(Number.NaN, base, base + n);
  }

  /** Pool space for an empty ring of `size` tiles (a power of two). */
  private allocate(layout: GroupLayout, size: number): number {
    const reused = layout.free[Math.log2(size)]?.pop();
    if (reused !== undefined) {
      layout.tags.fill(EMPTY, reused, reused + size);
      layout.values.fill(0, reused, reused + size);
      return reused;
    }
    const at = layout.poolUsed;
    layout.poolUsed += size;
    if (layout.poolUsed > layout.tags.length) {
      const capacity = Math.max(4096, layout.poolUsed * 2);
      const tags = new Int32Array(capacity);
      tags.set(layout.tags);
      tags.fill(EMPTY, layout.tags.length);
      const values = new Float64Array(capacity);
      values.set(layout.values);
      layout.tags = tags;
      layout.values = values;
    }
    return at;
  }

  /** Moves ring `key` to pool space twice its size (live tiles, distinct modulo the old size, stay so). */
  private grow(layout: GroupLayout, key: number): void {
    const from = layout.ringOf[2 * key] as number;
    const mask = layout.ringOf[2 * key + 1] as number;
    const size = (mask + 1) * 2;
    const to = this.allocate(layout, size);
    const { tags, values } = layout;
    for (let i = 0; i <= mask; i++) {
      const tag = tags[from + i] as number;
      if (tag === EMPTY) continue;
      tags[to + (tag & (size - 1))] = tag;
      values[to + (tag & (size - 1))] = values[from + i] as number;
    }
    const bySize = Math.log2(mask + 1);
    const free = layout.free[bySize] ?? [];
    free.push(from);
    layout.free[bySize] = free;
    layout.ringOf[2 * key] = to;
    layout.ringOf[2 * key + 1] = size - 1;
  }

  /** The pool position of `tile` in entity ent's ring of series s, taking it over from an older tile that is no
   * longer needed, or growing the ring. */
  private claim(layout: GroupLayout, ent: number, s: number, tile: number): number {
    const key = ent * layout.ringSize.length + s;
    for (;;) {
      const at = (layout.ringOf[2 * key] as number) + (tile & (layout.ringOf[2 * key + 1] as number));
      const held = layout.tags[at] as number;
      if (held === tile) return at;
      if (tile <= (layout.lostUpTo[s] as number)) lost(layout, s, tile);
      if (held === EMPTY) {
        layout.tags[at] = tile;
        return at;
      }
      const series = layout.g.series[s] as CompiledGroup['series'][number];
      if (held < tile && held < tileOf(this.lowWatermark(), series.tileMs) - series.maxTiles) {
        // Never read or updated again; the totals at the cursor may include it, so the next read recomputes them.
        layout.state[ent * layout.stride + s] = Number.NaN;
        if (held > (layout.lostUpTo[s] as number)) layout.lostUpTo[s] = held;
        layout.tags[at] = tile;
        if (layout.kind[s] === DISTINCT) this.members.release(layout.values[at] as number);
        layout.values[at] = 0;
        return at;
      }
      this.grow(layout, key);
    }
  }

  private addValue(layout: GroupLayout, ent: number, s: number, tile: number, x: number) {
    const at = this.claim(layout, ent, s, tile);
    const values = layout.values;
    if (layout.kind[s] === LATEST) {
      // Read by scanning, no totals. A fresh tile holds 0, below any event time.
      if (x > (values[at] as number)) values[at] = x;
      return;
    }
    values[at] = (values[at] as number) + x;
    const state = layout.state;
    const base = ent * layout.stride;
    const c = state[base + s] as number;
    if (!(tile < c)) return; // also when there is no cursor
    const totals = base + layout.ringSize.length;
    for (let k = layout.slotStart[s] as number, end = layout.slotStart[s + 1] as number; k < end; k++) {
      const si = layout.slotList[k] as number;
      if (tile >= c - (layout.tiles[si] as number)) state[totals + si] = (state[totals + si] as number) + x;
    }
  }

  private addMember(layout: GroupLayout, ent: number, s: number, tile: number, id: number) {
    const at = this.claim(layout, ent, s, tile);
    const head = layout.values[at] as number;
    const added = this.members.add(head, id);
    if (added === head) return;
    layout.values[at] = added;
    // A new member inside the windows at the cursor: their counts are recounted at the next read.
    const cursorAt = ent * layout.stride + s;
    const c = layout.state[cursorAt] as number;
    if (tile < c && tile >= c - (layout.maxTiles[s] as number)) layout.state[cursorAt] = Number.NaN;
  }

  private read(t: number, out: Float64Array): void {
    for (let gi = 0; gi < this.layouts.length; gi++) {
      const layout = this.layouts[gi] as GroupLayout;
      const ent = this.current[gi] as number;
      const { raw, state, slotStart, slotList, tiles } = layout;
      const n = layout.ringSize.length;
      const base = ent * layout.stride;
      for (let s = 0; s < n; s++) {
        const cur = this.tileNow[layout.width[s] as number] as number;
        const first = slotStart[s] as number;
        const end = slotStart[s + 1] as number;
        if (layout.kind[s] === LATEST) {
          const key = ent * n + s;
          const ring = layout.ringOf[2 * key] as number;
          const mask = layout.ringOf[2 * key + 1] as number;
          for (let k = first; k < end; k++) {
            const si = slotList[k] as number;
            raw[si] = latest(layout, ring, mask, cur, cur - (tiles[si] as number));
          }
          continue;
        }
        if (state[base + s] !== cur) this.moveTo(layout, ent, s, cur);
        for (let k = first; k < end; k++) {
          const si = slotList[k] as number;
          raw[si] = state[base + n + si] as number;
        }
      }
      finishGroup(layout.g, t, raw, out);
    }
  }

  /** Brings series s's window totals from the cursor's tile to `cur` (the read's tile). */
  private moveTo(layout: GroupLayout, ent: number, s: number, cur: number): void {
    const n = layout.ringSize.length;
    const key = ent * n + s;
    const ring = layout.ringOf[2 * key] as number;
    const mask = layout.ringOf[2 * key + 1] as number;
    const state = layout.state;
    const cursorAt = ent * layout.stride + s;
    const c = state[cursorAt] as number;
    const distinct = layout.kind[s] === DISTINCT;
    for (let k = layout.slotStart[s] as number, end = layout.slotStart[s + 1] as number; k < end; k++) {
      const si = layout.slotList[k] as number;
      const w = layout.tiles[si] as number;
      const lo = cur - w;
      if (lo <= (layout.lostUpTo[s] as number)) lost(layout, s, lo);
      const total = ent * layout.stride + n + si;
      // Totals are integers (counts, sums in 1/scale units): adding and removing tiles in any order is exact.
      if (distinct) state[total] = this.members.countDistinct(layout, ring, mask, lo, cur);
      else if (Number.isNaN(c) || Math.abs(cur - c) >= w) state[total] = sumOf(layout, ring, mask, lo, cur);
      else if (cur > c)
        state[total] =
          (state[total] as number) - sumOf(layout, ring, mask, c - w, lo) + sumOf(layout, ring, mask, c, cur);
      else
        state[total] =
          (state[total] as number) - sumOf(layout, ring, mask, cur, c) + sumOf(layout, ring, mask, lo, c - w);
    }
    state[cursorAt] = cur;
  }
}

function lost(layout: GroupLayout, s: number, tile: number): never {
  throw new Error(
    `${layout.g.group.entity.name} series ${(layout.g.series[s] as CompiledGroup['series'][number]).id}: tile ${tile} ` +
      'was needed after it was dropped (a partition started far behind the others); give the replay its partition count',
  );
}

/** The total of the tiles [from, to) of the ring at `ring` (size mask + 1). */
function sumOf(layout: GroupLayout, ring: number, mask: number, from: number, to: number): number {
  const { tags, values } = layout;
  let x = 0;
  if (to - from <= mask) {
    for (let tile = from; tile < to; tile++) {
      const at = ring + (tile & mask);
      if (tags[at] === tile) x += values[at] as number;
    }
    return x;
  }
  // More tiles than the ring holds: visit the ring instead (EMPTY is below any tile).
  for (let at = ring; at <= ring + mask; at++) {
    const tag = tags[at] as number;
    if (tag >= from && tag < to) x += values[at] as number;
  }
  return x;
}

/** The latest event time in the ring's tiles [lo, cur): the newest written tile holds it (tiles are ordered in time). */
function latest(layout: GroupLayout, ring: number, mask: number, cur: number, lo: number): number {
  const { tags, values } = layout;
  if (cur - lo <= mask) {
    for (let tile = cur - 1; tile >= lo; tile--)
      if (tags[ring + (tile & mask)] === tile) return values[ring + (tile & mask)] as number;
    return Number.NEGATIVE_INFINITY;
  }
  // More tiles than the ring holds: the ring's newest tile in range.
  let newest = -1;
  for (let at = ring; at <= ring + mask; at++) {
    const tag = tags[at] as number;
    if (tag >= lo && tag < cur && (newest < 0 || tag > (tags[newest] as number))) newest = at;
  }
  return newest < 0 ? Number.NEGATIVE_INFINITY : (values[newest] as number);
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

  /** How many distinct members the lists of the ring's tiles [from, to) hold together. */
  countDistinct(layout: GroupLayout, ring: number, mask: number, from: number, to: number): number {
    const { tags, values } = layout;
    const mark = ++this.mark;
    let count = 0;
    if (to - from <= mask) {
      for (let tile = from; tile < to; tile++) {
        const at = ring + (tile & mask);
        if (tags[at] === tile) count += this.unseen(values[at] as number, mark);
      }
    } else {
      for (let at = ring; at <= ring + mask; at++) {
        const tag = tags[at] as number;
        if (tag >= from && tag < to) count += this.unseen(values[at] as number, mark);
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
