import type { AdImpression } from '../../events/types.ts';
import type { Window } from '../window.ts';
import type { AggregationOf, NumericColumn, Op } from './op.ts';

/** Sum of a numeric column, kept as integers of 1/scale units so that sums are exact (no float drift). */
export interface Sum extends AggregationOf<'sum'> {
  readonly column: NumericColumn;
  readonly scale: number;
}

export const sum = (
  name: string,
  source: 'impression',
  column: NumericColumn,
  windows: readonly Window[],
  scale = 1e6,
): Sum => ({ op: 'sum', name, source, column, windows, scale });

export const SUM: Op<Sum> = {
  merge: 'add',
  update: (agg, e) => {
    const v = (e as AdImpression)[agg.column];
    return v == null ? null : Math.round(v * agg.scale);
  },
  finish: 'scaled',
  finishParam: (agg) => agg.scale,
  defaultValue: () => 0,
  exact: false,
  sql: (agg, _w, at) => `sumIf(${at.sum}, ${at.inWindow}) / ${at.num(agg.scale)}`,
  sqlEventValue: (agg, source, e) => {
    const column = source === agg.source ? e.column(agg.column) : null;
    if (column === null) return 'CAST(NULL AS Nullable(Float64))';
    return `CAST(${e.round(`toFloat64(${column}) * ${e.num(agg.scale)}`)} AS Nullable(Float64))`;
  },
};
