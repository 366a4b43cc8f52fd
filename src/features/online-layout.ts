// How online stores keep the features: each numeric window in stored fields of blocks of tiles (the group's
// OnlineLayout), and how a tile update maps onto them. Storage only: the features mean the same in every layout.

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
    combine: Merge & ('add' | 'max'),
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
          value = value === undefined ? r.value : combine === 'add' ? value + r.value : Math.max(value, r.value);
        }
        if (value !== undefined) visit(prefix, at, (cuts[c + 1] as number) - at, value);
      }
    }
  }
}

/** The stored fields' name prefix of a series kept in blocks of `block` tiles. */
export function storedPrefix(s: Series, block: number): string {
  return `${s.id}.${block}:`;
}
