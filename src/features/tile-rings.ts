// The feature state every path steps (the engine): the backfill's replay reads vectors from it, the stream keeps
// one per source partition and writes what each batch touched as parts (online/part-writer.ts). Built for speed
// from the compiled FeatureSet (same series, slots, updates and boundary rule; no feature is declared here). Each
// event's key and distinct columns are interned once into dense ids shared by all groups (or handed by the source), and entity instances are numbered by those ids (no
// key strings). A group's series of one tile width share rings: per entity, one ring of tiles whose every tile
// holds a lane per series, so an event claims each tile once and a read moves each width's cursor once. Per
// entity and width the record holds the cursor (the tile last read), and per window its running total at the
// cursor: a read at the cursor's tile copies the totals; another tile slides them by the tiles that enter and
// leave. Exact distinct counts keep each tile's members and count a window's at read time (rarely: reads mostly
// fall in the cursor's tile, and only a late member there recounts). Rings start small (most entities are
// sparse: a few events per day) and double when they must span more. Per-series facts are flattened into typed
// arrays: the per-event loops touch no definition objects. Events come in chunks, taken one group at a time (the
// groups' states are independent): each pass runs one group's code over one group's state, in log order.
import type { AdClick, AdImpression } from '../events/types.ts';
import { ByteWriter } from '../util/byte-writer.ts';
import { finishGroup } from './assemble.ts';
import type { CompiledGroup, FeatureSet, Series } from './compile.ts';
import type { Source } from './define.ts';
import { KEY_FIELDS, KEY_SEPARATOR } from './entities.ts';
import { type EntityIndex, PairIndex, SingleIndex } from './entity-index.ts';
import { tileOf } from './window.ts';

type SourceEvent = AdImpression | AdClick;

const EMPTY = -2147483648;

/** How a lane's tiles combine. */
const ADD = 0;
const LATEST = 1;
const DISTINCT = 2;

/** A group's rings of one tile width: one per entity, each tile with a lane per series of that width. */
interface Rings {
  readonly tileMs: number;
  readonly lanes: number;
  /** Per lane: ADD, LATEST or DISTINCT. */
  readonly kind: Int8Array;
  /** The longest window over the lanes, in tiles. */
  readonly maxTiles: number;
  /** The windows read from these rings: per slot, its lane and length in tiles (LATEST lanes' last). */
  readonly slots: Int32Array;
  readonly slotLane: Int32Array;
  readonly slotTiles: Int32Array;
  /** Slots [0, summed) are kept as running totals; the rest (LATEST) are scanned at each read. */
  readonly summed: number;
  /** Per entity: its ring's pool position and size - 1. */
  ringOf: Int32Array;
  /** The pool: tile T of a ring at position p, mask m sits at p + (T & m) when tags[that] === T; lane l of
   * position q at values[q * lanes + l]. */
  tags: Int32Array;
  values: Float64Array;
  used: number;
  /** Freed ring space by log2 size, reused by rings of that size. */
  readonly free: number[][];
  /** The newest tile ever dropped from any of these rings (needing it again is an error). */
  lostUpTo: number;
}

interface GroupLayout {
  readonly g: CompiledGroup;
  /** The entity's fields, as indices into TileRings.columns (the only one twice for one-field entities). */
  readonly keys: Int32Array;
  readonly index: EntityIndex;
  entities: number;
  readonly rings: Rings[];
  /** Per series: its rings (index into `rings`), lane, and for DISTINCT the index into TileRings.columns of its
   * members' column. */
  readonly ringsOf: Int32Array;
  readonly laneOf: Int32Array;
  readonly memberColumn: Int32Array;
  /** Per entity: the cursor per rings (NaN: none, totals to recompute), then the total per slot. */
  state: Float64Array;
  readonly stride: number;
  readonly raw: Float64Array;
  /** Per source, the series its events update. */
  readonly updates: Record<Source, Int32Array>;
  /** The read's tile per rings, for the event being processed. */
  readonly tiles: Int32Array;
  /** Per entity: its fields' column ids (its key), and the step that last touched it or that it sits out. */
  entityIds: Int32Array<ArrayBuffer>;
  touchedIn: Int32Array<ArrayBuffer>;
  frozenIn: Int32Array<ArrayBuffer>;
  /** Per entity and rings: the newest tile held. */
  newest: Int32Array<ArrayBuffer>;
  /** Entities touched since the last export. */
  readonly touched: number[];
  /** Per rings r and lane l: the series at r * MAX_LANES + l. */
  readonly seriesAt: Int32Array;
  /** Per series: its id as a JSON key opening its pairs ("<id>":[), in bytes. */
  readonly idBytes: Buffer[];
}

/** An entity of a group by number, with its key (entities.ts's entityKey). */
export interface EntityRef {
  readonly group: number;
  readonly entity: number;
  readonly key: string;
}

/** A stored part's tiles (online/parts.ts's Part is one, with its batch marker). */
export interface PartTiles {
  /** Numeric series by id: flat (tile, value) pairs in tile order. */
  n: Record<string, number[]>;
  /** Distinct series by id: flat (tile, members) pairs in tile order. */
  s: Record<string, (number | string[])[]>;
}

/**
 * Admitted events in log order, as the rings take them. Row i's vector (impressions) goes to out[row[i] * F]
 * (F features); lowWatermark[i] is the replay's lowest partition watermark once event i was admitted: the lowest
 * event time any later read or update can have, so tiles older than it by a whole window may be overwritten.
 * Key ids, when the source hands them, are keyIds[i][keyIdsAt[i] + k] for KEY_FIELDS[k].
 */
export interface StepChunk {
  length: number;
  readonly events: SourceEvent[];
  /** The events' times, as a column: each group's pass reads them. */
  time: Float64Array;
  readonly sources: Source[];
  readonly keyIds: (Int32Array | undefined)[];
  keyIdsAt: Int32Array;
  lowWatermark: Float64Array;
  row: Int32Array;
}

/**
 * Tiles a ring holds before it first grows: one, since most entities are sparse (a user × category sees one or two
 * events); rings double as they need (within one partition, up to the longest window plus the lateness).
 */
const INITIAL_RING = 1;

/** Lanes a rings may hold (series of one tile width in one group). */
const MAX_LANES = 64;

export class TileRings {
  private readonly layouts: GroupLayout[];
  /** The event columns that key entities or hold distinct members, and per column its values' ids. */
  private readonly columns: readonly (keyof SourceEvent)[];
  private readonly dictionaries: Map<string, number>[];
  /** Per column: its index in KEY_FIELDS (ids a source may hand), or -1. */
  private readonly keyOf: Int32Array;
  /** Whether records come with key ids (set by the first). */
  private coded: boolean | undefined;
  /** The chunk's ids, ids[row * columns + column]. */
  private ids = new Int32Array(0);
  /** The low watermark (StepChunk) of the event being processed. */
  private low = Number.NEGATIVE_INFINITY;
  private readonly members = new MemberLists();
  /** Per column: its values by id (the dictionaries reversed), for entity keys and distinct members. */
  private readonly names: string[][];
  /** Steps so far: entities touched (or sitting out) in this one carry its number. */
  private stamp = 1;
  /** Per group: the entity of each event of the chunk last located. */
  private located: Int32Array[] = [];
  private locatedChunk: StepChunk | undefined;
  /** exportTouched's scratch for a ring's tiles. */
  private sorting = new Int32Array(1024);

  constructor(readonly features: FeatureSet) {
    const columns: (keyof SourceEvent)[] = [];
    const column = (name: keyof SourceEvent) => {
      if (!columns.includes(name)) columns.push(name);
      return columns.indexOf(name);
    };
    const kindOf = (s: Series) => (s.op.merge === 'union' ? DISTINCT : s.op.merge === 'max' ? LATEST : ADD);
    this.layouts = features.groups.map((g) => {
      const tileWidths = [...new Set(g.series.map((s) => s.tileMs))];
      const ringsOf = Int32Array.from(g.series, (s) => tileWidths.indexOf(s.tileMs));
      const laneOf = Int32Array.from(
        g.series,
        (s, i) => g.series.slice(0, i).filter((x) => x.tileMs === s.tileMs).length,
      );
      // By rings, so that an event claims each of its tiles once.
      const updatesOf = (source: Source) =>
        Int32Array.from(g.series.keys())
          .filter((s) => g.series[s]?.agg.source === source)
          .sort((a, b) => (ringsOf[a] as number) - (ringsOf[b] as number));
      const rings = tileWidths.map((tileMs, r): Rings => {
        const lanes = g.series.filter((s) => s.tileMs === tileMs);
        const kind = Int8Array.from(lanes, kindOf);
        const slots = g.slots
          .map((slot, i) => ({ i, series: slot.series, tiles: slot.window.tiles }))
          .filter(({ series }) => ringsOf[series] === r)
          .sort(
            (a, b) =>
              Number(kind[laneOf[a.series] as number] === LATEST) - Number(kind[laneOf[b.series] as number] === LATEST),
          );
        const maxTiles = Math.max(...lanes.map((s) => s.maxTiles));
        return {
          tileMs,
          lanes: lanes.length,
          kind,
          maxTiles,
          slots: Int32Array.from(slots, (x) => x.i),
          slotLane: Int32Array.from(slots, (x) => laneOf[x.series] as number),
          slotTiles: Int32Array.from(slots, (x) => x.tiles),
          summed: slots.filter((x) => kind[laneOf[x.series] as number] !== LATEST).length,
          ringOf: new Int32Array(0),
          tags: new Int32Array(0),
          values: new Float64Array(0),
          used: 0,
          free: [],
          lostUpTo: EMPTY,
        };
      });
      return {
        g,
        keys: Int32Array.of(
          column(g.group.entity.fields[0] as keyof SourceEvent),
          column(g.group.entity.fields.at(-1) as keyof SourceEvent),
        ),
        index: g.group.entity.fields.length === 1 ? new SingleIndex() : new PairIndex(),
        entities: 0,
        rings,
        ringsOf,
        laneOf,
        memberColumn: Int32Array.from(g.series, (s) => (s.op.memberColumn ? column(s.op.memberColumn(s.agg)) : -1)),
        state: new Float64Array(0),
        stride: rings.length + g.slots.length,
        raw: new Float64Array(g.slots.length),
        updates: { impression: updatesOf('impression'), click: updatesOf('click') },
        tiles: new Int32Array(rings.length),
        entityIds: new Int32Array(0),
        touchedIn: new Int32Array(0),
        frozenIn: new Int32Array(0),
        newest: new Int32Array(0),
        touched: [],
        seriesAt: (() => {
          const at = new Int32Array(MAX_LANES * tileWidths.length);
          g.series.forEach((_, s) => {
            at[(ringsOf[s] as number) * MAX_LANES + (laneOf[s] as number)] = s;
          });
          return at;
        })(),
        idBytes: g.series.map((s) => Buffer.from(`${JSON.stringify(s.id)}:[`)),
      };
    });
    for (const { group, series } of features.groups) {
      if (group.entity.fields.length > 2) throw new Error(`${group.entity.name}: entities have at most two fields`);
      for (const w of new Set(series.map((s) => s.tileMs)))
        if (series.filter((s) => s.tileMs === w).length > MAX_LANES)
          throw new Error(`${group.entity.name}: more than ${MAX_LANES} series of one tile width`);
    }
    this.columns = columns;
    this.dictionaries = columns.map(() => new Map());
    this.names = columns.map(() => []);
    this.located = this.layouts.map(() => new Int32Array(0));
    this.keyOf = Int32Array.from(columns, (c) => (KEY_FIELDS as readonly string[]).indexOf(c));
  }

  /**
   * Steps the chunk's events: for each, reads its vector at its event time (impressions) into `out`, then applies
   * its updates. Reading first keeps the point-in-time rule; the event's own tile is outside every window anyway.
   * Without `out`, only applies them (the stream's state: see locate and exportTouched).
   */
  stepChunk(c: StepChunk, out?: Float64Array): void {
    if (this.locatedChunk !== c) this.locate(c);
    this.locatedChunk = undefined;
    for (let gi = 0; gi < this.layouts.length; gi++)
      this.stepGroup(this.layouts[gi] as GroupLayout, c, out, this.located[gi] as Int32Array);
    this.stamp++;
  }

  /**
   * Finds (or numbers) every entity the chunk's events belong to, before it is stepped; answers those first seen
   * here, so that what a store holds of them can be loaded (loadPart) before their first update.
   */
  locate(c: StepChunk): EntityRef[] {
    this.intern(c);
    const width = this.columns.length;
    const found: EntityRef[] = [];
    for (let gi = 0; gi < this.layouts.length; gi++) {
      const layout = this.layouts[gi] as GroupLayout;
      const k0 = layout.keys[0] as number;
      const k1 = layout.keys[1] as number;
      if ((this.located[gi] as Int32Array).length < c.length) this.located[gi] = new Int32Array(c.length * 2);
      const entities = this.located[gi] as Int32Array;
      const { ids } = this;
      for (let i = 0; i < c.length; i++) {
        const next = layout.entities;
        const a = ids[i * width + k0] as number;
        const b = ids[i * width + k1] as number;
        const ent = layout.index.get(a, b, next);
        if (ent === next) {
          this.newEntity(layout);
          layout.entityIds[2 * ent] = a;
          layout.entityIds[2 * ent + 1] = b;
          found.push({ group: gi, entity: ent, key: this.entityKeyOf(layout, ent) });
        }
        entities[i] = ent;
      }
    }
    this.locatedChunk = c;
    return found;
  }

  /** Entity ent's key, "<entity name>:<id>[|<id>]" as entities.ts's entityKey makes it. */
  private entityKeyOf(layout: GroupLayout, ent: number): string {
    const first = (this.names[layout.keys[0] as number] as string[])[layout.entityIds[2 * ent] as number];
    if (layout.g.group.entity.fields.length === 1) return `${layout.g.group.entity.name}:${first}`;
    const second = (this.names[layout.keys[1] as number] as string[])[layout.entityIds[2 * ent + 1] as number];
    return `${layout.g.group.entity.name}:${first}${KEY_SEPARATOR}${second}`;
  }

  /** Leaves an entity out of the next step (its stored state already holds the chunk: a batch replayed). */
  freeze(e: EntityRef): void {
    (this.layouts[e.group] as GroupLayout).frozenIn[e.entity] = this.stamp;
  }

  /**
   * Adds a stored part's tiles into an entity (tiles by each series' merge, so several parts load as their
   * merge); tiles no read at or after `before` can ask for are left out.
   */
  loadPart(e: EntityRef, part: PartTiles, before = Number.NEGATIVE_INFINITY): void {
    const layout = this.layouts[e.group] as GroupLayout;
    const ent = e.entity;
    layout.g.series.forEach((series, s) => {
      const stored = series.op.merge === 'union' ? part.s[series.id] : part.n[series.id];
      if (stored === undefined) return;
      const r = layout.ringsOf[s] as number;
      const rings = layout.rings[r] as Rings;
      const lane = layout.laneOf[s] as number;
      const kind = rings.kind[lane] as number;
      const first = tileOf(before, rings.tileMs) - series.maxTiles;
      for (let i = 0; i < stored.length; i += 2) {
        const tile = stored[i] as number;
        if (tile < first) continue;
        const at = this.claim(layout, r, ent, tile) * rings.lanes + lane;
        this.touch(layout, r, ent, tile);
        const value = stored[i + 1] as number | string[];
        if (kind === DISTINCT) {
          const col = layout.memberColumn[s] as number;
          for (const m of value as string[])
            rings.values[at] = this.members.add(rings.values[at] as number, this.idOf(col, m));
        } else if (kind === LATEST) {
          if ((value as number) > (rings.values[at] as number)) rings.values[at] = value as number;
        } else rings.values[at] = (rings.values[at] as number) + (value as number);
      }
    });
  }

  /** Column col's id of value v (interned on first sight). */
  private idOf(col: number, v: string): number {
    const dictionary = this.dictionaries[col] as Map<string, number>;
    let id = dictionary.get(v);
    if (id === undefined) {
      id = dictionary.size;
      dictionary.set(v, id);
      (this.names[col] as string[])[id] = v;
    }
    return id;
  }

  /** Records that ring r of entity ent holds `tile` (the newest, for exports). */
  private touch(layout: GroupLayout, r: number, ent: number, tile: number): void {
    const at = ent * layout.rings.length + r;
    if (tile > (layout.newest[at] as number)) layout.newest[at] = tile;
  }

  /**
   * Forgets every entity, keeping the space (and the interned ids): rings used for one batch at a time (the
   * offline tile history) step each from nothing without allocating again.
   */
  clear(): void {
    for (const layout of this.layouts) {
      layout.index.clear();
      layout.entities = 0;
      layout.touched.length = 0;
      for (const rings of layout.rings) {
        rings.tags.fill(EMPTY, 0, rings.used);
        rings.values.fill(0, 0, rings.used * rings.lanes);
        rings.used = 0;
        rings.free.length = 0;
        rings.lostUpTo = EMPTY;
      }
    }
    this.members.clear();
    this.locatedChunk = undefined;
    this.stamp++;
  }

  /** How many key values these rings have interned. */
  get interned(): number {
    let n = 0;
    for (const d of this.dictionaries) n += d.size;
    return n;
  }

  /** How many entities these rings hold, over all groups. */
  get size(): number {
    let n = 0;
    for (const layout of this.layouts) n += layout.entities;
    return n;
  }

  /**
   * Each entity stepped since the last call, as its part's JSON (online/parts.ts's Part, batch end `o`): its tiles
   * that a read at or after `before` can ask for. The JSON is written as bytes into one buffer for the call, not
   * through objects or string pieces (it is most of what the stream computes per batch), and handed out as text:
   * the Valkey client then sends a call as one string (Buffers take its slower mixed-piece path).
   */
  exportTouched(before: number, o: number, emit: (key: string, json: string) => void): void {
    const out = new JsonBytes();
    const parts: { key: string; from: number }[] = [];
    const head = Buffer.from(`{"o":${o},"n":{`);
    for (const layout of this.layouts) {
      const nr = layout.rings.length;
      const nSeries = layout.g.series.length;
      const firsts = layout.g.series.map((series) => tileOf(before, series.tileMs) - series.maxTiles);
      const ordered: number[][] = layout.rings.map(() => []);
      for (const ent of layout.touched) {
        // Per rings, the tiles held in order: walked from `from` when the ring spans the range, else sorted.
        for (let r = 0; r < nr; r++) {
          const rings = layout.rings[r] as Rings;
          const ring = rings.ringOf[2 * ent] as number;
          const mask = rings.ringOf[2 * ent + 1] as number;
          const to = layout.newest[ent * nr + r] as number;
          const from = tileOf(before, rings.tileMs) - rings.maxTiles;
          const tiles = ordered[r] as number[];
          tiles.length = 0;
          if (to === EMPTY || to < from) continue;
          if (to - from <= mask) {
            for (let tile = from; tile <= to; tile++) if (rings.tags[ring + (tile & mask)] === tile) tiles.push(tile);
          } else {
            // Sorted as a typed array (numeric, native), then copied out.
            if (this.sorting.length <= mask) this.sorting = new Int32Array((mask + 1) * 2);
            let n = 0;
            for (let at = ring; at <= ring + mask; at++) {
              const tag = rings.tags[at] as number;
              if (tag !== EMPTY && tag >= from) this.sorting[n++] = tag;
            }
            const sorted = this.sorting.subarray(0, n).sort();
            for (let i = 0; i < n; i++) tiles.push(sorted[i] as number);
          }
        }
        parts.push({ key: this.entityKeyOf(layout, ent), from: out.length });
        out.bytes(head);
        for (const distinct of [false, true]) {
          if (distinct) out.bytes(MIDDLE);
          let firstSeries = true;
          for (let s = 0; s < nSeries; s++) {
            if (((layout.g.series[s] as Series).op.merge === 'union') !== distinct) continue;
            const r = layout.ringsOf[s] as number;
            const rings = layout.rings[r] as Rings;
            const lane = layout.laneOf[s] as number;
            const kind = rings.kind[lane] as number;
            const ring = rings.ringOf[2 * ent] as number;
            const mask = rings.ringOf[2 * ent + 1] as number;
            const first = firsts[s] as number;
            let opened = false;
            for (const tile of ordered[r] as number[]) {
              if (tile < first) continue;
              const v = rings.values[(ring + (tile & mask)) * rings.lanes + lane] as number;
              // A lane of a claimed tile that no event updated holds its empty value: not a tile of this series.
              if (kind === LATEST ? v === Number.NEGATIVE_INFINITY : v === 0) continue;
              if (!opened) {
                if (!firstSeries) out.byte(44);
                out.bytes(layout.idBytes[s] as Buffer);
                opened = true;
                firstSeries = false;
              } else out.byte(44);
              out.number(tile);
              out.byte(44);
              if (kind === DISTINCT) {
                const names = this.names[layout.memberColumn[s] as number] as string[];
                out.text(JSON.stringify(this.members.list(v).map((m) => names[m])));
              } else out.number(v);
            }
            if (opened) out.byte(93);
          }
        }
        out.bytes(END);
      }
      layout.touched.length = 0;
    }
    const bytes = out.done();
    for (let p = 0; p < parts.length; p++) {
      const { key, from } = parts[p] as { key: string; from: number };
      emit(
        key,
        bytes.toString('utf8', from, p + 1 < parts.length ? (parts[p + 1] as { from: number }).from : bytes.length),
      );
    }
  }

  /** Each event's ids per column: handed by the source (key fields), else interned here. */
  private intern(c: StepChunk): void {
    const width = this.columns.length;
    if (this.ids.length < c.length * width) this.ids = new Int32Array(c.length * width * 2);
    const ids = this.ids;
    for (let i = 0; i < c.length; i++) {
      const keyIds = c.keyIds[i];
      this.coded ??= keyIds !== undefined;
      if ((keyIds !== undefined) !== this.coded)
        throw new Error('a replay takes key ids with every record or with none');
      const e = c.events[i] as SourceEvent;
      for (let col = 0; col < width; col++) {
        const key = this.keyOf[col] as number;
        if (keyIds !== undefined && key >= 0) {
          ids[i * width + col] = keyIds[(c.keyIdsAt[i] as number) + key] as number;
          continue;
        }
        const dictionary = this.dictionaries[col] as Map<string, number>;
        const value = e[this.columns[col] as keyof SourceEvent] as string;
        let id = dictionary.get(value);
        if (id === undefined) {
          id = dictionary.size;
          dictionary.set(value, id);
          (this.names[col] as string[])[id] = value;
        }
        ids[i * width + col] = id;
      }
    }
  }

  /** One group's pass over the chunk, its events' entities located. */
  private stepGroup(layout: GroupLayout, c: StepChunk, out: Float64Array | undefined, entities: Int32Array): void {
    const width = this.columns.length;
    const { ids } = this;
    const F = this.features.names.length;
    const { rings, tiles } = layout;
    for (let i = 0; i < c.length; i++) {
      const e = c.events[i] as SourceEvent;
      const source = c.sources[i] as Source;
      const ent = entities[i] as number;
      if (out === undefined) {
        if (layout.frozenIn[ent] === this.stamp) continue;
        if (layout.touchedIn[ent] !== this.stamp) {
          layout.touchedIn[ent] = this.stamp;
          layout.touched.push(ent);
        }
      }
      const t = c.time[i] as number;
      this.low = c.lowWatermark[i] as number;
      for (let r = 0; r < rings.length; r++) tiles[r] = tileOf(t, (rings[r] as Rings).tileMs);
      if (source === 'impression' && out !== undefined) this.read(layout, ent, t, out, (c.row[i] as number) * F);
      // Named properties, not keyed by the source string (a slow, megamorphic access; as Replay's counts).
      const updates = source === 'impression' ? layout.updates.impression : layout.updates.click;
      let claimed = -1;
      let position = 0;
      for (let u = 0; u < updates.length; u++) {
        const s = updates[u] as number;
        const r = layout.ringsOf[s] as number;
        const ring = rings[r] as Rings;
        const lane = layout.laneOf[s] as number;
        const kind = ring.kind[lane] as number;
        // A distinct member is its column's id (interned); the other updates are the op's numbers.
        const series = layout.g.series[s] as Series;
        const update = kind === DISTINCT ? 0 : (series.op.update(series.agg, e) as number | null);
        if (update === null) continue;
        const tile = tiles[r] as number;
        if (r !== claimed) {
          position = this.claim(layout, r, ent, tile);
          this.touch(layout, r, ent, tile);
          claimed = r;
        }
        const at = position * ring.lanes + lane;
        if (kind === DISTINCT)
          this.addMember(layout, r, ent, tile, at, ids[i * width + (layout.memberColumn[s] as number)] as number);
        else if (kind === LATEST) {
          if (update > (ring.values[at] as number)) ring.values[at] = update;
        } else this.addValue(layout, r, ent, tile, at, lane, update);
      }
    }
  }

  /** Makes room for the group's next entity: its rings empty, no cursor. */
  private newEntity(layout: GroupLayout): void {
    const ent = layout.entities++;
    const n = layout.rings.length;
    if (layout.entities * layout.stride > layout.state.length) {
      const capacity = Math.max(1024, layout.entities * 2);
      const state = new Float64Array(capacity * layout.stride);
      state.set(layout.state);
      layout.state = state;
      layout.entityIds = grown(layout.entityIds, 2 * capacity);
      layout.touchedIn = grown(layout.touchedIn, capacity);
      layout.frozenIn = grown(layout.frozenIn, capacity);
      layout.newest = grown(layout.newest, capacity * n);
      for (const rings of layout.rings) {
        const ringOf = new Int32Array(2 * capacity);
        ringOf.set(rings.ringOf);
        rings.ringOf = ringOf;
      }
    }
    for (const rings of layout.rings) {
      rings.ringOf[2 * ent] = allocate(rings, INITIAL_RING);
      rings.ringOf[2 * ent + 1] = INITIAL_RING - 1;
    }
    const base = ent * layout.stride;
    layout.state.fill(Number.NaN, base, base + n);
    layout.newest.fill(EMPTY, ent * n, ent * n + n);
  }

  /** The pool position of `tile` in entity ent's ring r, taking it over from an older tile that is no longer
   * needed, or growing the ring. */
  private claim(layout: GroupLayout, r: number, ent: number, tile: number): number {
    const rings = layout.rings[r] as Rings;
    for (;;) {
      const at = (rings.ringOf[2 * ent] as number) + (tile & (rings.ringOf[2 * ent + 1] as number));
      const held = rings.tags[at] as number;
      if (held === tile) return at;
      if (tile <= rings.lostUpTo) lost(layout, rings, tile);
      if (held === EMPTY) {
        rings.tags[at] = tile;
        fresh(rings, at);
        return at;
      }
      if (held < tile && held < tileOf(this.low, rings.tileMs) - rings.maxTiles) {
        // Never read or updated again. The totals at the cursor c span [c - maxTiles, c): when they may include
        // it, the next read recomputes them.
        const cursorAt = ent * layout.stride + r;
        if (!(held < (layout.state[cursorAt] as number) - rings.maxTiles)) layout.state[cursorAt] = Number.NaN;
        if (held > rings.lostUpTo) rings.lostUpTo = held;
        rings.tags[at] = tile;
        for (let l = 0; l < rings.lanes; l++) {
          if (rings.kind[l] === DISTINCT) this.members.release(rings.values[at * rings.lanes + l] as number);
          rings.values[at * rings.lanes + l] = 0;
        }
        fresh(rings, at);
        return at;
      }
      grow(rings, ent);
    }
  }

  private addValue(layout: GroupLayout, r: number, ent: number, tile: number, at: number, lane: number, x: number) {
    const rings = layout.rings[r] as Rings;
    rings.values[at] = (rings.values[at] as number) + x;
    const state = layout.state;
    const base = ent * layout.stride;
    const c = state[base + r] as number;
    if (!(tile < c)) return; // also when there is no cursor
    const totals = base + layout.rings.length;
    for (let k = 0; k < rings.summed; k++) {
      if (rings.slotLane[k] !== lane || tile < c - (rings.slotTiles[k] as number)) continue;
      const total = totals + (rings.slots[k] as number);
      state[total] = (state[total] as number) + x;
    }
  }

  private addMember(layout: GroupLayout, r: number, ent: number, tile: number, at: number, id: number) {
    const rings = layout.rings[r] as Rings;
    const head = rings.values[at] as number;
    const added = this.members.add(head, id);
    if (added === head) return;
    rings.values[at] = added;
    // A new member inside the windows at the cursor: they are recounted at the next read.
    const cursorAt = ent * layout.stride + r;
    const c = layout.state[cursorAt] as number;
    if (tile < c && tile >= c - rings.maxTiles) layout.state[cursorAt] = Number.NaN;
  }

  /**
   * Each entity stepped since the last call, with its numeric tiles in ring order (per tile, its series' values):
   * a batch's own merged updates when the rings held nothing before it (the offline tile history).
   */
  exportNumbers(emit: (key: string, series: Series[], tiles: number[], values: number[]) => void): void {
    for (const layout of this.layouts) {
      const nr = layout.rings.length;
      for (const ent of layout.touched) {
        const series: Series[] = [];
        const tiles: number[] = [];
        const values: number[] = [];
        for (let r = 0; r < nr; r++) {
          const rings = layout.rings[r] as Rings;
          const ring = rings.ringOf[2 * ent] as number;
          const mask = rings.ringOf[2 * ent + 1] as number;
          for (let at = ring; at <= ring + mask; at++) {
            const tile = rings.tags[at] as number;
            if (tile === EMPTY) continue;
            for (let lane = 0; lane < rings.lanes; lane++) {
              const kind = rings.kind[lane] as number;
              const v = rings.values[at * rings.lanes + lane] as number;
              if (kind === DISTINCT || (kind === LATEST ? v === Number.NEGATIVE_INFINITY : v === 0)) continue;
              series.push(layout.g.series[layout.seriesAt[r * MAX_LANES + lane] as number] as Series);
              tiles.push(tile);
              values.push(v);
            }
          }
        }
        if (series.length > 0) emit(this.entityKeyOf(layout, ent), series, tiles, values);
      }
      layout.touched.length = 0;
    }
  }

  /** The group's features for entity ent at time t into out[at + feature]. */
  private read(layout: GroupLayout, ent: number, t: number, out: Float64Array, at: number): void {
    const { raw, state } = layout;
    const n = layout.rings.length;
    const base = ent * layout.stride;
    for (let r = 0; r < n; r++) {
      const rings = layout.rings[r] as Rings;
      const cur = layout.tiles[r] as number;
      if (rings.summed > 0 && state[base + r] !== cur) this.moveTo(layout, r, ent, cur);
      const slots = rings.slots;
      for (let k = 0; k < rings.summed; k++) raw[slots[k] as number] = state[base + n + (slots[k] as number)] as number;
      for (let k = rings.summed; k < slots.length; k++)
        raw[slots[k] as number] = latest(
          rings,
          ent,
          rings.slotLane[k] as number,
          cur,
          cur - (rings.slotTiles[k] as number),
        );
    }
    finishGroup(layout.g, t, raw, out, at);
  }

  /** Brings ring r's window totals from the cursor's tile to `cur` (the read's tile). */
  private moveTo(layout: GroupLayout, r: number, ent: number, cur: number): void {
    const rings = layout.rings[r] as Rings;
    const state = layout.state;
    const cursorAt = ent * layout.stride + r;
    const c = state[cursorAt] as number;
    const totals = ent * layout.stride + layout.rings.length;
    for (let k = 0; k < rings.summed; k++) {
      const lane = rings.slotLane[k] as number;
      const w = rings.slotTiles[k] as number;
      const lo = cur - w;
      if (lo <= rings.lostUpTo) lost(layout, rings, lo);
      const total = totals + (rings.slots[k] as number);
      // Totals are integers (counts, sums in 1/scale units): adding and removing tiles in any order is exact.
      if (rings.kind[lane] === DISTINCT) state[total] = this.members.countDistinct(rings, ent, lane, lo, cur);
      else if (Number.isNaN(c) || Math.abs(cur - c) >= w) state[total] = sumOf(rings, ent, lane, lo, cur);
      else if (cur > c)
        state[total] = (state[total] as number) - sumOf(rings, ent, lane, c - w, lo) + sumOf(rings, ent, lane, c, cur);
      else
        state[total] = (state[total] as number) - sumOf(rings, ent, lane, cur, c) + sumOf(rings, ent, lane, lo, c - w);
    }
    state[cursorAt] = cur;
  }
}

/** A freshly claimed tile: LATEST lanes start below any event time (the others at 0, as space is handed out). */
function fresh(rings: Rings, at: number): void {
  for (let l = 0; l < rings.lanes; l++)
    if (rings.kind[l] === LATEST) rings.values[at * rings.lanes + l] = Number.NEGATIVE_INFINITY;
}

/** Pool space for an empty ring of `size` tiles (a power of two). */
function allocate(rings: Rings, size: number): number {
  const reused = rings.free[log2(size)]?.pop();
  if (reused !== undefined) {
    rings.tags.fill(EMPTY, reused, reused + size);
    rings.values.fill(0, reused * rings.lanes, (reused + size) * rings.lanes);
    return reused;
  }
  const at = rings.used;
  rings.used += size;
  if (rings.used > rings.tags.length) {
    const capacity = Math.max(4096, rings.used * 2);
    const tags = new Int32Array(capacity);
    tags.set(rings.tags);
    tags.fill(EMPTY, rings.tags.length);
    const values = new Float64Array(capacity * rings.lanes);
    values.set(rings.values);
    rings.tags = tags;
    rings.values = values;
  }
  return at;
}

/** Moves entity ent's ring to pool space twice its size (live tiles, distinct modulo the old size, stay so). */
function grow(rings: Rings, ent: number): void {
  const from = rings.ringOf[2 * ent] as number;
  const mask = rings.ringOf[2 * ent + 1] as number;
  const size = (mask + 1) * 2;
  const to = allocate(rings, size);
  const { tags, values, lanes } = rings;
  for (let i = 0; i <= mask; i++) {
    const tag = tags[from + i] as number;
    if (tag === EMPTY) continue;
    const at = to + (tag & (size - 1));
    tags[at] = tag;
    for (let l = 0; l < lanes; l++) values[at * lanes + l] = values[(from + i) * lanes + l] as number;
  }
  const bySize = log2(mask + 1);
  const free = rings.free[bySize] ?? [];
  free.push(from);
  rings.free[bySize] = free;
  rings.ringOf[2 * ent] = to;
  rings.ringOf[2 * ent + 1] = size - 1;
}

/** log2 of a power of two, without Math.log2's floating-point call. */
function log2(size: number): number {
  return 31 - Math.clz32(size);
}

/** A tile was needed after these rings dropped it (a state started again holds it: see part-writer.ts). */
export class TileDroppedError extends Error {}

function lost(layout: GroupLayout, rings: Rings, tile: number): never {
  const tileMs = layout.g.series.find((_, s) => layout.rings[layout.ringsOf[s] as number] === rings)?.tileMs;
  throw new TileDroppedError(
    `${layout.g.group.entity.name} series of ${(tileMs ?? 0) / 1000}s tiles: tile ${tile} was needed after it ` +
      'was dropped (a partition started far behind the others); give the replay its partition count',
  );
}

/** The total of lane `lane` over the tiles [from, to) of entity ent's ring. */
function sumOf(rings: Rings, ent: number, lane: number, from: number, to: number): number {
  const { tags, values, lanes } = rings;
  const ring = rings.ringOf[2 * ent] as number;
  const mask = rings.ringOf[2 * ent + 1] as number;
  let x = 0;
  if (to - from <= mask) {
    for (let tile = from; tile < to; tile++) {
      const at = ring + (tile & mask);
      if (tags[at] === tile) x += values[at * lanes + lane] as number;
    }
    return x;
  }
  // More tiles than the ring holds: visit the ring instead (EMPTY is below any tile).
  for (let at = ring; at <= ring + mask; at++) {
    const tag = tags[at] as number;
    if (tag >= from && tag < to) x += values[at * lanes + lane] as number;
  }
  return x;
}

/** The latest event time of lane `lane` in the tiles [lo, cur) of entity ent's ring: the newest tile with one
 * holds it (tiles are ordered in time); -Infinity when none. */
function latest(rings: Rings, ent: number, lane: number, cur: number, lo: number): number {
  const { tags, values, lanes } = rings;
  const ring = rings.ringOf[2 * ent] as number;
  const mask = rings.ringOf[2 * ent + 1] as number;
  if (cur - lo <= mask) {
    for (let tile = cur - 1; tile >= lo; tile--) {
      const at = ring + (tile & mask);
      if (tags[at] === tile && values[at * lanes + lane] !== Number.NEGATIVE_INFINITY)
        return values[at * lanes + lane] as number;
    }
    return Number.NEGATIVE_INFINITY;
  }
  // More tiles than the ring holds: the ring's newest tile in range with an event.
  let newest = -1;
  for (let at = ring; at <= ring + mask; at++) {
    const tag = tags[at] as number;
    if (tag < lo || tag >= cur || values[at * lanes + lane] === Number.NEGATIVE_INFINITY) continue;
    if (newest < 0 || tag > (tags[newest] as number)) newest = at;
  }
  return newest < 0 ? Number.NEGATIVE_INFINITY : (values[newest * lanes + lane] as number);
}

/**
 * The members of distinct series' tiles: per tile a list without repeats, as linked nodes in one typed pool
 * (no object per tile or per member). A list is named by its head node + 1, 0 for the empty list, -(m + 1) for
 * the list of member m alone (most tiles: no node to chase): what the tile's value holds. Counts over a window are
 * taken at read time, marking members in a scratch array.
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
    if (head === 0) return -(m + 1);
    if (head < 0) return head === -(m + 1) ? head : this.node(m, this.node(-head - 1, 0));
    for (let n = head; n !== 0; n = this.next[n - 1] as number) if (this.member[n - 1] === m) return head;
    return this.node(m, head);
  }

  /** A new node of member m before list `head` (a list of nodes or empty): the list it starts. */
  private node(m: number, head: number): number {
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

  /** Forgets every list. */
  clear(): void {
    this.used = 0;
    this.free = 0;
  }

  /** List `head`'s members, oldest first. */
  list(head: number): number[] {
    if (head === 0) return [];
    if (head < 0) return [-head - 1];
    const out: number[] = [];
    for (let n = head; n !== 0; n = this.next[n - 1] as number) out.push(this.member[n - 1] as number);
    return out.reverse();
  }

  /** Frees list `head`'s nodes for reuse. */
  release(head: number): void {
    if (head <= 0) return;
    let last = head - 1;
    while (this.next[last] !== 0) last = (this.next[last] as number) - 1;
    this.next[last] = this.free;
    this.free = head;
  }

  /** How many distinct members the lists of lane `lane` over the tiles [from, to) of entity ent's ring hold. */
  countDistinct(rings: Rings, ent: number, lane: number, from: number, to: number): number {
    const { tags, values, lanes } = rings;
    const ring = rings.ringOf[2 * ent] as number;
    const mask = rings.ringOf[2 * ent + 1] as number;
    const mark = ++this.mark;
    let count = 0;
    if (to - from <= mask) {
      for (let tile = from; tile < to; tile++) {
        const at = ring + (tile & mask);
        if (tags[at] === tile) count += this.unseen(values[at * lanes + lane] as number, mark);
      }
    } else {
      for (let at = ring; at <= ring + mask; at++) {
        const tag = tags[at] as number;
        if (tag >= from && tag < to) count += this.unseen(values[at * lanes + lane] as number, mark);
      }
    }
    return count;
  }

  /** Marks list `head`'s members; returns how many were not marked yet. */
  private unseen(head: number, mark: number): number {
    if (head < 0) return this.marked(-head - 1, mark);
    let count = 0;
    for (let n = head; n !== 0; n = this.next[n - 1] as number)
      count += this.marked(this.member[n - 1] as number, mark);
    return count;
  }

  /** Marks member m: 1 when it was not marked yet. */
  private marked(m: number, mark: number): number {
    if (m >= this.seen.length) this.seen = grown(this.seen, Math.max(m + 1, this.seen.length * 2));
    if (this.seen[m] === mark) return 0;
    this.seen[m] = mark;
    return 1;
  }
}

function grown(a: Int32Array<ArrayBuffer>, length: number): Int32Array<ArrayBuffer> {
  const b = new Int32Array(length);
  b.set(a);
  return b;
}

const MIDDLE = Buffer.from('},"s":{');
const END = Buffer.from('}}');

/** JSON written as bytes: integers digit by digit, other numbers through their text. */
class JsonBytes extends ByteWriter {
  number(x: number): void {
    if (Number.isSafeInteger(x)) this.integer(x);
    else this.text(String(x));
  }
}
