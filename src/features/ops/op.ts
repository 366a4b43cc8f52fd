// What an aggregation op is, whole: how an event updates its tile, how tiles merge, how a window's merged value
// becomes the feature, the feature with nothing in the window, and the op restated in parity's independent SQL.
// Every path (the engine's tile rings, the online stores, the offline history, the read plan, parity) asks the op;
// none of them names one. Adding an op: a file here, and its line in index.ts.
import type { AdClick, AdImpression } from '../../events/types.ts';
import type { Source } from '../define.ts';
import type { Window } from '../window.ts';

export type SourceEvent = AdImpression | AdClick;

/** Columns an op may read, by type. */
export type NumericColumn = {
  [K in keyof AdImpression]: AdImpression[K] extends number | null ? K : never;
}[keyof AdImpression];
export type StringColumn = { [K in keyof SourceEvent]: SourceEvent[K] extends string ? K : never }[keyof SourceEvent];

/** What every declared aggregation has: its op, name, source events and windows. */
export interface AggregationOf<Op extends string> {
  readonly op: Op;
  readonly name: string;
  readonly source: Source;
  readonly windows: readonly Window[];
}

/**
 * How tiles (and a window's tiles) merge: 'add' numbers, keep the 'max' (a latest time), or 'union' sets of members.
 * Stores and the engine implement these three; an op picks one.
 */
export type Merge = 'add' | 'max' | 'union';

/**
 * How a window's merged value becomes the feature: 'as-is'; 'scaled' (divided by finishParam: a sum kept in 1/scale
 * units); 'age' (seconds from the latest time to the read time; finishParam when the window saw nothing).
 */
export type Finish = 'as-is' | 'scaled' | 'age';

/** What parity's SQL (backfill/parity-sql.ts) hands an op to state one window's value with. */
export interface SqlWindow {
  /** Additive merges ('add', 'max'): selects the joined tile rows of the window. */
  readonly inWindow: string;
  /** Over those rows: the running event count, latest event time (ms), and sum of the op's sqlEventValue. */
  readonly count: string;
  readonly latest: string;
  readonly sum: string;
  /** The impression's time (ms). */
  readonly readTime: string;
  /** 'union': the joined rows' member and tile, and the impression's tile. */
  readonly member: string;
  readonly tile: string;
  readonly readTile: string;
  /** A number as a SQL literal that reads back the same double. */
  num(x: number): string;
}

/** What parity's SQL hands an op to state a per-event value with. */
export interface SqlEvent {
  /** A numeric column of the source's table as SQL (times in epoch ms), or null where the table has none. */
  column(name: string): string | null;
  num(x: number): string;
  /** JavaScript's Math.round(x), in SQL. */
  round(x: string): string;
}

export interface Op<A extends AggregationOf<string>> {
  readonly merge: Merge;
  /** What one event adds to its tile: a number ('add', 'max') or a member ('union'); null when it has no value. */
  update(agg: A, e: SourceEvent): number | string | null;
  readonly finish: Finish;
  finishParam(agg: A, w: Window): number;
  /** The feature of an entity with nothing in the window. */
  defaultValue(agg: A, w: Window): number;
  /** Parity compares its features exactly (they are integers), not to a relative 1e-9. */
  readonly exact: boolean;
  /** 'union' ops: the column whose values are the members. */
  memberColumn?(agg: A): StringColumn;
  /** The window's feature value in SQL. */
  sql(agg: A, w: Window, at: SqlWindow): string;
  /** For ops that sum a per-event value: that value, per event of `source`, as SQL (NULL when it has none). */
  sqlEventValue?(agg: A, source: Source, e: SqlEvent): string;
}
