// The feature-definition API: a feature is data (source events, entity, aggregation, windows), in the spirit of
// Chronon's GroupBy. One definition compiles to the streaming updates, the backfill replay and the scoring reads.
import type { AdClick, AdImpression } from '../events/types.ts';
import type { Entity } from './entities.ts';
import type { Window } from './window.ts';

/** Event kinds features are computed from. */
export type Source = 'impression' | 'click';

type SourceEvent = AdImpression | AdClick;
type NumericColumn = {
  [K in keyof AdImpression]: AdImpression[K] extends number | null ? K : never;
}[keyof AdImpression];
type StringColumn = { [K in keyof SourceEvent]: SourceEvent[K] extends string ? K : never }[keyof SourceEvent];

interface Base {
  readonly name: string;
  readonly source: Source;
  readonly windows: readonly Window[];
}

/** Number of events. */
export interface Count extends Base {
  readonly op: 'count';
}
/** Sum of a numeric column, kept as integers of 1/scale units so that sums are exact (no float drift). */
export interface Sum extends Base {
  readonly op: 'sum';
  readonly column: NumericColumn;
  readonly scale: number;
}
/** Exact number of distinct values of a column (a set per tile; meant for modest cardinalities). */
export interface Distinct extends Base {
  readonly op: 'distinct';
  readonly column: StringColumn;
}
/** Seconds from the entity's latest event in the window to the read time; the window length when none. */
export interface LastSeen extends Base {
  readonly op: 'last_seen';
}
export type Aggregation = Count | Sum | Distinct | LastSeen;

/** (numerator + rate * weight) / (denominator + weight): a smoothed rate such as CTR, per shared window. */
export interface Ratio {
  readonly name: string;
  readonly numerator: string;
  readonly denominator: string;
  readonly prior: { readonly rate: number; readonly weight: number };
}

/**
 * How online stores keep a group's windows (storage only: the features mean the same either way).
 * - 'totals' (default): each window's total as read in each tile. A read takes one field per window; an update
 *   touches every tile of each window. Valkey keeps one hash per stored field holding every entity: for
 *   candidate-side entities, read ~100 at once per ranking.
 * - 'entity-totals': the same totals in one hash per entity: for entities a ranking reads a few dozen of, too
 *   numerous for hashes that hold them all (user×category).
 * - 'tiles': each tile once, in one hash per entity. A read sums the window's tiles; an update touches one field.
 *   For numerous entities read once per ranking (users), where the totals' writes and memory would dominate.
 */
export type OnlineLayout = 'totals' | 'entity-totals' | 'tiles';

export interface FeatureGroup {
  readonly entity: Entity;
  readonly description: string;
  readonly aggregations: readonly Aggregation[];
  readonly ratios: readonly Ratio[];
  readonly online: OnlineLayout;
}

export const count = (name: string, source: Source, windows: readonly Window[]): Count => ({
  op: 'count',
  name,
  source,
  windows,
});
export const sum = (
  name: string,
  source: 'impression',
  column: NumericColumn,
  windows: readonly Window[],
  scale = 1e6,
): Sum => ({
  op: 'sum',
  name,
  source,
  column,
  windows,
  scale,
});
export const distinct = (name: string, source: Source, column: StringColumn, windows: readonly Window[]): Distinct => ({
  op: 'distinct',
  name,
  source,
  column,
  windows,
});
export const lastSeen = (name: string, source: Source, windows: readonly Window[]): LastSeen => ({
  op: 'last_seen',
  name,
  source,
  windows,
});
export const ratio = (name: string, numerator: string, denominator: string, prior: Ratio['prior']): Ratio => ({
  name,
  numerator,
  denominator,
  prior,
});

export function groupBy(
  entity: Entity,
  spec: { description: string; aggregations: Aggregation[]; ratios?: Ratio[]; online?: OnlineLayout },
): FeatureGroup {
  const byName = new Map(spec.aggregations.map((a) => [a.name, a]));
  if (byName.size !== spec.aggregations.length) throw new Error(`${entity.name}: aggregation names must be unique`);
  for (const r of spec.ratios ?? []) {
    const num = byName.get(r.numerator);
    const den = byName.get(r.denominator);
    if (!num || !den) throw new Error(`${entity.name}.${r.name}: ratio of unknown aggregations`);
    const same = num.windows.length === den.windows.length && num.windows.every((w, i) => w === den.windows[i]);
    if (!same) throw new Error(`${entity.name}.${r.name}: numerator and denominator must share windows`);
  }
  return {
    entity,
    description: spec.description,
    aggregations: spec.aggregations,
    ratios: spec.ratios ?? [],
    online: spec.online ?? 'totals',
  };
}
