// The write side's core: the tile updates one admitted event makes, for every group its source feeds. Stores,
// the offline history and the served-vector overlay receive them through an UpdateSink.
import type { AdClick, AdImpression } from '../events/types.ts';
import type { CompiledGroup, Series } from './compile.ts';
import type { Source } from './define.ts';
import { entityKey } from './entities.ts';
import { tileOf } from './window.ts';

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

/** Writes the tile updates one admitted event of `source` makes into `sink`. */
export function applyEvent(
  groups: readonly CompiledGroup[],
  bySource: Record<Source, readonly { group: number; series: Series }[]>,
  source: Source,
  e: AdImpression | AdClick,
  sink: UpdateSink,
): void {
  let lastGroup = -1;
  let key = '';
  for (const { group, series } of bySource[source]) {
    if (group !== lastGroup) {
      key = entityKey((groups[group] as CompiledGroup).group.entity, e);
      lastGroup = group;
    }
    const update = series.op.update(series.agg, e);
    if (update === null) continue;
    const field = `${series.id}:${tileOf(e.event_time, series.tileMs)}`;
    if (typeof update === 'string') sink.sadd(key, field, update);
    else if (series.op.merge === 'max') sink.max(key, field, update);
    else sink.incr(key, field, update);
  }
}
