// The write side's core: the tile updates one admitted event makes, for every group its source feeds. Stores,
// the offline history and the served-vector overlay receive them through an UpdateSink.
import type { AdClick, AdImpression } from '../events/types.ts';
import type { CompiledGroup, Series } from './compile.ts';
import type { Source } from './define.ts';
import { entityKey } from './entities.ts';
import { tileOf } from './window.ts';

/**
 * Where tile updates go: one event's value for one tile of one series of an entity (by entity key). Online stores
 * fold it into their parts (online/parts.ts) by the series' op merge; the offline store records the batch's merged
 * updates.
 */
export interface UpdateSink {
  /** Folds `value` (a number, or a member for 'union' ops) into tile `tile` of `series` of entity `key`. */
  update(key: string, series: Series, tile: number, value: number | string): void;
}

/** Writes the tile updates admitted events make. */
export class EventUpdater {
  constructor(
    private readonly groups: readonly CompiledGroup[],
    private readonly bySource: Record<Source, readonly { group: number; series: Series }[]>,
  ) {}

  /** Writes the tile updates one admitted event of `source` makes into `sink`. */
  apply(source: Source, e: AdImpression | AdClick, sink: UpdateSink): void {
    const entries = this.bySource[source];
    let lastGroup = -1;
    let key = '';
    for (let i = 0; i < entries.length; i++) {
      const { group, series } = entries[i] as { group: number; series: Series };
      if (group !== lastGroup) {
        key = entityKey((this.groups[group] as CompiledGroup).group.entity, e);
        lastGroup = group;
      }
      const value = series.op.update(series.agg, e);
      if (value !== null) sink.update(key, series, tileOf(e.event_time, series.tileMs), value);
    }
  }
}
