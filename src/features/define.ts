// The feature-definition API: a feature is data (source events, entity, aggregation, windows), in the spirit of
// Chronon's GroupBy. One definition compiles to the streaming updates, the backfill replay and the scoring reads.
import type { Entity } from './entities.ts';
import type { Aggregation } from './ops/index.ts';

/** Event kinds features are computed from. */
export type Source = 'impression' | 'click';

export type { Aggregation } from './ops/index.ts';
export { count, distinct, lastSeen, sum } from './ops/index.ts';

/** (numerator + rate * weight) / (denominator + weight): a smoothed rate such as CTR, per shared window. */
export interface Ratio {
  readonly name: string;
  readonly numerator: string;
  readonly denominator: string;
  readonly prior: { readonly rate: number; readonly weight: number };
}

export interface FeatureGroup {
  readonly entity: Entity;
  readonly description: string;
  readonly aggregations: readonly Aggregation[];
  readonly ratios: readonly Ratio[];
}

export const ratio = (name: string, numerator: string, denominator: string, prior: Ratio['prior']): Ratio => ({
  name,
  numerator,
  denominator,
  prior,
});

export function groupBy(
  entity: Entity,
  spec: { description: string; aggregations: Aggregation[]; ratios?: Ratio[] },
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
  };
}
