// The online layout: an entity's features are kept as its tiles, in one "part" per source partition that writes it
// (an ad's impressions arrive on every partition). Each part has a single writer (the stream task owning that
// partition), which holds it in process and overwrites it whole after each batch: one write per touched entity and
// partition, not one per stored field. A read merges the entity's parts (by each op's merge) and sums the window's
// tiles at the read's time, so windows slide with no new writes. Pure: the stores move parts as JSON strings.
import type { FeatureSet, Series } from '../features/compile.ts';
import type { ReadRequest, ReadResult } from '../features/read-plan.ts';
import type { PartTiles } from '../features/tile-rings.ts';

/** One source partition's tiles of one entity, as stored (JSON). */
export interface Part extends PartTiles {
  /** The end offset of the last batch applied from the part's source. */
  o: number;
}

export const emptyPart = (): Part => ({ o: -1, n: {}, s: {} });

/** A parsed stored-field name "<series>.<block>:<read tile>": the total of tiles r - block … r - 1. */
interface StoredField {
  id: string;
  block: number;
  r: number;
}

/** Parsed names kept at most (then started over): read layouts repeat per tile, tile fields per batch. */
const MAX_PARSED = 100_000;

/** The parts of a feature set's entities: applying a batch's updates, pruning, and answering reads. */
export class PartLayout {
  /** Per entity name, its numeric and distinct series by id. */
  private readonly series: { name: string; byId: Map<string, Series> }[] = [];
  private readonly tiles = new Map<string, { id: string; tile: number }>();
  private readonly stored = new Map<string, StoredField>();

  constructor(features: FeatureSet) {
    for (const g of features.groups)
      this.series.push({ name: g.group.entity.name, byId: new Map(g.series.map((s) => [s.id, s] as const)) });
  }

  private seriesOf(key: string): Map<string, Series> {
    // Matched in place, not sliced: prune asks for every entity a batch writes.
    const colon = key.indexOf(':');
    for (const { name, byId } of this.series) if (name.length === colon && key.startsWith(name)) return byId;
    throw new Error(`no feature group for entity ${key}`);
  }

  /** A tile field "<series>:<tile>" (a read's set fields) parsed, remembered: reads name the same few again and again. */
  private tile(field: string): { id: string; tile: number } {
    let p = this.tiles.get(field);
    if (p === undefined) {
      if (this.tiles.size >= MAX_PARSED) this.tiles.clear();
      const colon = field.lastIndexOf(':');
      p = { id: field.slice(0, colon), tile: Number(field.slice(colon + 1)) };
      this.tiles.set(field, p);
    }
    return p;
  }

  private storedField(field: string): StoredField {
    let p = this.stored.get(field);
    if (p === undefined) {
      if (this.stored.size >= MAX_PARSED) this.stored.clear();
      const colon = field.lastIndexOf(':');
      const dot = field.lastIndexOf('.', colon);
      p = { id: field.slice(0, dot), block: Number(field.slice(dot + 1, colon)), r: Number(field.slice(colon + 1)) };
      this.stored.set(field, p);
    }
    return p;
  }

  /** The answer to `r` from the entity's parts: each stored field's total (or latest), each set union's size. */
  answer(r: ReadRequest, parts: readonly Part[]): ReadResult {
    const series = this.seriesOf(r.key);
    const values = new Array<number | null>(r.fields.length);
    for (let f = 0; f < r.fields.length; f++) {
      const { id, block, r: end } = this.storedField(r.fields[f] as string);
      values[f] = total(parts, id, end - block, end, series.get(id)?.op.merge === 'max');
    }
    const setCounts = r.sets.map((fields) => {
      const union = new Set<string>();
      for (const field of fields) for (const m of membersOf(parts, this.tile(field))) union.add(m);
      return union.size;
    });
    return { values, setCounts };
  }
}

/** Series `id`'s total (or latest, `max`) over tiles [from, to) of all parts; null when no tile has one. */
function total(parts: readonly Part[], id: string, from: number, to: number, max: boolean): number | null {
  let x: number | null = null;
  for (let p = 0; p < parts.length; p++) {
    const pairs = (parts[p] as Part).n[id];
    if (pairs === undefined) continue;
    for (let i = 0; i < pairs.length; i += 2) {
      const tile = pairs[i] as number;
      if (tile < from) continue;
      if (tile >= to) break;
      const v = pairs[i + 1] as number;
      x = x === null ? v : max ? Math.max(x, v) : x + v;
    }
  }
  return x;
}

function* membersOf(parts: readonly Part[], { id, tile }: { id: string; tile: number }): Iterable<string> {
  for (const part of parts) {
    const pairs = part.s[id];
    if (pairs === undefined) continue;
    for (let i = 0; i < pairs.length; i += 2)
      if (pairs[i] === tile) {
        yield* pairs[i + 1] as string[];
        break;
      }
  }
}
