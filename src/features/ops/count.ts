import type { Source } from '../define.ts';
import type { Window } from '../window.ts';
import type { AggregationOf, Op } from './op.ts';

/** Number of events. */
export interface Count extends AggregationOf<'count'> {}

export const count = (name: string, source: Source, windows: readonly Window[]): Count => ({
  op: 'count',
  name,
  source,
  windows,
});

export const COUNT: Op<Count> = {
  merge: 'add',
  update: () => 1,
  finish: 'as-is',
  finishParam: () => 1,
  defaultValue: () => 0,
  exact: true,
  sql: (_agg, _w, at) => `toFloat64(sumIf(${at.count}, ${at.inWindow}))`,
};
