// The write side's core: the tile updates one admitted event makes, for every group its source feeds. Stores,
// the offline history and the served-vector overlay receive them through an UpdateSink.
import type { AdClick, AdImpression } from '../events/types.ts';
import type { CompiledGroup, Series } from './compile.ts';
import type { Source } from './define.ts';
import { entityKey } from './entities.ts';
import { tileOf } from './window.ts';

/**
 * Where tile updates go. Keys are entity keys; fields are "<series>:<tile>". Online stores keep them in parts
 * (online/parts.ts); the offline store records them as they are.
 */
export interface UpdateSink {
  incr(key: string, field: string, delta: number): void;
  max(key: string, field: string, value: number): void;
  /** Adds a member to the set named `field` of entity `key`. */
  sadd(key: string, field: string, member: string): void;
}

/** Writes the tile updates admitted events make, remembering each series' last field name (events come in runs). */
export class EventUpdater {
  private readonly lastTile: Record<Source, Float64Array>;
  private readonly lastField: Record<Source, string[]>;

  constructor(
    private readonly groups: readonly CompiledGroup[],
    private readonly bySource: Record<Source, readonly { group: number; series: Series }[]>,
  ) {
    const tiles = (n: number) => new Float64Array(n).fill(Number.NaN);
    this.lastTile = { impression: tiles(bySource.impression.length), click: tiles(bySource.click.length) };
    this.lastField = { impression: [], click: [] };
  }

  /** Writes the tile updates one admitted event of `source` makes into `sink`. */
  apply(source: Source, e: AdImpression | AdClick, sink: UpdateSink): void {
    const entries = this.bySource[source];
    const lastTile = this.lastTile[source];
    const lastField = this.lastField[source];
    let lastGroup = -1;
    let key = '';
    for (let i = 0; i < entries.length; i++) {
      const { group, series } = entries[i] as { group: number; series: Series };
      if (group !== lastGroup) {
        key = entityKey((this.groups[group] as CompiledGroup).group.entity, e);
        lastGroup = group;
      }
      const update = series.op.update(series.agg, e);
      if (update === null) continue;
      const tile = tileOf(e.event_time, series.tileMs);
      let field = lastField[i] as string;
      if (lastTile[i] !== tile) {
        field = `${series.id}:${tile}`;
        lastTile[i] = tile;
        lastField[i] = field;
      }
      if (typeof update === 'string') sink.sadd(key, field, update);
      else if (series.op.merge === 'max') sink.max(key, field, update);
      else sink.incr(key, field, update);
    }
  }
}
