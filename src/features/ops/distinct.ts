import type { Source } from '../define.ts';
import type { Window } from '../window.ts';
import type { AggregationOf, Op, StringColumn } from './op.ts';

/** Exact number of distinct values of a column (a set per tile; meant for modest cardinalities). */
export interface Distinct extends AggregationOf<'distinct'> {
  readonly column: StringColumn;
}

export const distinct = (name: string, source: Source, column: StringColumn, windows: readonly Window[]): Distinct => ({
  op: 'distinct',
  name,
  source,
  column,
  windows,
});

export const DISTINCT: Op<Distinct> = {
  merge: 'union',
  update: (agg, e) => e[agg.column],
  memberColumn: (agg) => agg.column,
  finish: 'as-is',
  finishParam: () => 1,
  defaultValue: () => 0,
  exact: true,
  sql: (_agg, w, at) => `toFloat64(uniqExactIf(${at.member}, ${at.tile} >= ${at.readTile} - ${w.tiles}))`,
};
