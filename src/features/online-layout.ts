// Stored fields: each numeric window in blocks of tiles (the group's OnlineLayout), and how a tile update maps onto
// them. The in-process store keeps these; a read plan names them, and Valkey's parts answer them from tiles.
// Storage only: the features mean the same in every layout.

import { getOrCreate } from '../util/map.ts';
import type { CompiledGroup, Series } from './compile.ts';
import type { OnlineLayout } from './define.ts';
import type { Merge } from './ops/index.ts';
import { firstReadTile } from './window.ts';

export interface StoredPrefix {
  readonly entity: string;
  readonly online: OnlineLayout;
  readonly prefix: string;
  readonly tileMs: number;
}

/** The stored fields of compiled groups, and the runs of them an update touches. */
export class StoredLayout {
  /** Every stored field prefix (forEachStoredRun), with its entity and tile width. */
  readonly stored: readonly StoredPrefix[];
  /** Per entity name, per numeric series id: the field prefix of each block size its windows store. */
  private readonly storedPrefixes = new Map<string, Map<string, { prefix: string; block: number }[]>>();

  constructor(groups: readonly CompiledGroup[]) {
    const stored: StoredPrefix[] = [];
    for (const g of groups) {
      const bySeries = new Map<string, { prefix: string; block: number }[]>();
      g.slots.forEach((slot) => {
        const x = g.series[slot.series] as Series;
        if (x.op.merge === 'union') return;
        const blocks = getOrCreate(bySeries, x.id, () => []);
        if (blocks.some((b) => b.block === slot.block)) return;
        const prefix = storedPrefix(x, slot.block);
        blocks.push({ prefix, block: slot.block });
        stored.push({ entity: g.group.entity.name, online: g.group.online, prefix, tileMs: x.tileMs });
      });
      this.storedPrefixes.set(g.group.entity.name, bySeries);
    }
    this.stored = stored;
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
    const { blocks, tile } = this.parse(this.seriesOf(key), field, key);
    const first = firstReadTile(tile);
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
    combine: Merge & ('add' | 'max'),
    visit: (prefix: string, first: number, count: number, value: number) => void,
  ): void {
    if (updates.size === 0) return;
    const series = this.seriesOf(key);
    if (updates.size === 1) {
      for (const [field, value] of updates) {
        const { blocks, tile } = this.parse(series, field, key);
        for (const { prefix, block } of blocks) visit(prefix, firstReadTile(tile), block, value);
      }
      return;
    }
    // Per stored prefix, its runs (all `block` read tiles long) as flat (first, value) pairs.
    const byPrefix = new Map<string, { block: number; runs: number[] }>();
    for (const [field, value] of updates) {
      const { blocks, tile } = this.parse(series, field, key);
      const first = firstReadTile(tile);
      for (const { prefix, block } of blocks) {
        const at = byPrefix.get(prefix);
        if (at) at.runs.push(first, value);
        else byPrefix.set(prefix, { block, runs: [first, value] });
      }
    }
    for (const [prefix, { block, runs }] of byPrefix) {
      if (runs.length === 2) {
        visit(prefix, runs[0] as number, block, runs[1] as number);
        continue;
      }
      // Segments between the runs' starts and ends, each with the combined value of the runs covering it.
      const cuts = new Float64Array(runs.length);
      for (let i = 0; i < runs.length; i += 2) {
        cuts[i] = runs[i] as number;
        cuts[i + 1] = (runs[i] as number) + block;
      }
      cuts.sort();
      for (let c = 0; c + 1 < cuts.length; c++) {
        const at = cuts[c] as number;
        const next = cuts[c + 1] as number;
        if (next === at) continue;
        let value: number | undefined;
        for (let i = 0; i < runs.length; i += 2) {
          const first = runs[i] as number;
          if (first > at || first + block <= at) continue;
          const v = runs[i + 1] as number;
          value = value === undefined ? v : combine === 'add' ? value + v : Math.max(value, v);
        }
        if (value !== undefined) visit(prefix, at, next - at, value);
      }
    }
  }

  /** An entity key's numeric series (by series id: the stored prefix of each block size). */
  private seriesOf(key: string): Map<string, { prefix: string; block: number }[]> {
    const series = this.storedPrefixes.get(key.slice(0, key.indexOf(':')));
    if (!series) throw new Error(`no feature group for entity ${key}`);
    return series;
  }

  /** Tile fields ("<series>:<tile>") parsed, remembered: a batch names the same few tiles again and again. */
  private readonly parsed = new Map<string, { id: string; tile: number }>();

  private parse(series: Map<string, { prefix: string; block: number }[]>, field: string, key: string) {
    let p = this.parsed.get(field);
    if (p === undefined) {
      if (this.parsed.size >= 100_000) this.parsed.clear();
      const colon = field.lastIndexOf(':');
      p = { id: field.slice(0, colon), tile: Number(field.slice(colon + 1)) };
      this.parsed.set(field, p);
    }
    const blocks = series.get(p.id);
    if (!blocks) throw new Error(`no numeric series for field ${field} of ${key}`);
    return { blocks, tile: p.tile };
  }
}

/** The stored fields' name prefix of a series kept in blocks of `block` tiles. */
export function storedPrefix(s: Series, block: number): string {
  return `${s.id}.${block}:`;
}
