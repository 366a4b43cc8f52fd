import type { Source } from '../define.ts';
import type { Window } from '../window.ts';
import type { AggregationOf, Op } from './op.ts';

/** Seconds from the entity's latest event in the window to the read time; the window length when none. */
export interface LastSeen extends AggregationOf<'last_seen'> {}

export const lastSeen = (name: string, source: Source, windows: readonly Window[]): LastSeen => ({
  op: 'last_seen',
  name,
  source,
  windows,
});

export const LAST_SEEN: Op<LastSeen> = {
  merge: 'max',
  update: (_agg, e) => e.event_time,
  finish: 'age',
  finishParam: (_agg, w) => w.lengthMs / 1000,
  defaultValue: (_agg, w) => w.lengthMs / 1000,
  exact: false,
  sql: (_agg, w, at) =>
    `ifNull((${at.readTime} - maxIfOrNull(${at.latest}, ${at.inWindow} AND ${at.count} > 0)) / 1000, ${at.num(w.lengthMs / 1000)})`,
};
