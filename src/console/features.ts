// The Features page's data: the catalog compiled from the definitions, and for one entity its features' values over
// time from the offline store beside the online store's current values.
//
// History: the entity's applied events (ClickHouse `impressions` and `clicks`, verdict = applied, in the stream's
// apply order) go through the engine into a private in-process store (the stream's own PartWriter and parts, with
// nothing pruned), which is then read at each sample time through the scorer's read path (FeatureSet.plan, the
// store's read, FeatureSet.assemble). So every point is what the definitions give over what the stream applied:
// the same numbers a read at that time gives once every event has arrived (late events included).
import type { ClickHouseClient } from '@clickhouse/client';
import { fromClickHouse } from '../backfill/sources.ts';
import type { AdClick, AdImpression } from '../events/types.ts';
import type { CompiledGroup, FeatureSet } from '../features/compile.ts';
import { KEY_FIELDS, KEY_SEPARATOR, type KeyFields } from '../features/entities.ts';
import { sqlString } from '../offline/clickhouse.ts';
import type { FeatureReader } from '../online/contract.ts';
import { MemoryStore } from '../online/memory-store.ts';

export interface CatalogEntry {
  name: string;
  entity: string;
  /** count, sum, distinct, last_seen, or ratio (a smoothed rate of two aggregations). */
  aggregation: string;
  /** Event kind it is computed from, and the column for sum / distinct. */
  source: string;
  column: string | null;
  window: string;
  tile: string;
  default: number;
  description: string;
  /** For a ratio: numerator / denominator and its prior. */
  formula: string | null;
}

export interface Catalog {
  version: string;
  entities: { name: string; fields: string[]; description: string; features: number }[];
  features: CatalogEntry[];
}

const duration = (ms: number) =>
  ms % 86_400_000 === 0
    ? `${ms / 86_400_000}d`
    : ms % 3_600_000 === 0
      ? `${ms / 3_600_000}h`
      : ms % 60_000 === 0
        ? `${ms / 60_000}m`
        : `${ms / 1000}s`;

export function catalog(features: FeatureSet): Catalog {
  const out: CatalogEntry[] = [];
  for (const g of features.groups) {
    const description = g.group.description;
    for (const slot of g.slots) {
      const spec = features.features[slot.feature];
      const agg = g.series[slot.series]?.agg;
      if (!spec || !agg) continue;
      out.push({
        name: spec.name,
        entity: spec.entity,
        aggregation: agg.op,
        source: agg.source,
        column: 'column' in agg ? String(agg.column) : null,
        window: spec.window,
        tile: duration(slot.window.tileMs),
        default: spec.default,
        description,
        formula: null,
      });
    }
    for (const r of g.ratios) {
      const spec = features.features[r.feature];
      const num = g.slots[r.num];
      const den = g.slots[r.den];
      if (!spec || !num || !den) continue;
      const numName = features.features[num.feature]?.name;
      const denName = features.features[den.feature]?.name;
      out.push({
        name: spec.name,
        entity: spec.entity,
        aggregation: 'ratio',
        source: 'impression, click',
        column: null,
        window: spec.window,
        tile: duration(num.window.tileMs),
        default: spec.default,
        description,
        formula: `(${numName} + ${r.rate}·${r.weight}) / (${denName} + ${r.weight})`,
      });
    }
  }
  out.sort((a, b) => features.names.indexOf(a.name) - features.names.indexOf(b.name));
  return {
    version: features.version,
    entities: features.groups.map((g) => ({
      name: g.group.entity.name,
      fields: [...g.group.entity.fields],
      description: g.group.description,
      features: g.width,
    })),
    features: out,
  };
}

/** A request the caller got wrong (the API answers 400 with the message). */
export class BadRequest extends Error {}

/** The compiled group of `entity` and the key's fields, or BadRequest naming what is wrong. */
export function parseEntityKey(
  features: FeatureSet,
  entity: string,
  key: string,
): { group: CompiledGroup; context: KeyFields } {
  const group = features.groups.find((g) => g.group.entity.name === entity);
  if (!group)
    throw new BadRequest(
      `unknown entity "${entity}": one of ${features.groups.map((g) => g.group.entity.name).join(', ')}`,
    );
  const fields = group.group.entity.fields;
  const ids = key.split(KEY_SEPARATOR);
  if (ids.length !== fields.length || ids.some((id) => id.length === 0 || id.trim() !== id))
    throw new BadRequest(
      `malformed key "${key}" for ${entity}: expected ${fields.join(KEY_SEPARATOR)} (${fields.length} non-empty id${fields.length > 1 ? `s joined by "${KEY_SEPARATOR}"` : ''})`,
    );
  const context = Object.fromEntries(KEY_FIELDS.map((f) => [f, ''])) as unknown as KeyFields;
  fields.forEach((f, i) => {
    (context as Record<string, string>)[f] = ids[i] as string;
  });
  return { group, context };
}

/** The group's slice of one vector read at `t` from `reader` through the scorer's read path. */
export async function readGroup(
  features: FeatureSet,
  reader: FeatureReader,
  group: CompiledGroup,
  context: KeyFields,
  t: number,
): Promise<number[]> {
  const plan = features.plan([context], t);
  const results = await reader.read(plan.requests);
  const [vector] = features.assemble(plan, results);
  return Array.from((vector as Float64Array).subarray(group.start, group.start + group.width));
}

export interface History {
  entity: string;
  key: string;
  features: string[];
  /** Applied events of the entity in the offline store. */
  events: number;
  /** Event time range of those events (epoch ms), null without any. */
  first: number | null;
  last: number | null;
  /** Sample times (epoch ms) and, per feature, its value at each. */
  times: number[];
  values: number[][];
  /** The values read at `at`, when asked (to set beside the online store's at the same moment). */
  atValues: number[] | null;
}

/** Most sample points per history; the span is also bounded (MAX_HISTORY_SPAN_MS) so each point means a tile. */
export const HISTORY_POINTS = 240;
export const MAX_HISTORY_SPAN_MS = 31 * 86_400_000;

export async function featureHistory(
  offline: ClickHouseClient,
  features: FeatureSet,
  entity: string,
  key: string,
  range: { from?: number; to?: number } = {},
  at?: number,
): Promise<History> {
  const { group, context } = parseEntityKey(features, entity, key);
  if (range.from !== undefined && range.to !== undefined && range.from >= range.to)
    throw new BadRequest('from must be before to');
  const where = [
    "verdict = 'applied'",
    ...group.group.entity.fields.map((f) => `${f} = ${sqlString((context as Record<string, string>)[f] as string)}`),
  ].join(' AND ');
  const impressions: AdImpression[] = [];
  const clicks: AdClick[] = [];
  let first = Number.POSITIVE_INFINITY;
  let last = Number.NEGATIVE_INFINITY;
  for await (const r of fromClickHouse(offline, { where })) {
    if (r.source === 'impression') impressions.push(r.event);
    else clicks.push(r.event);
    first = Math.min(first, r.event.event_time);
    last = Math.max(last, r.event.event_time);
  }
  const store = new MemoryStore(features);
  if (impressions.length)
    await store.applyBatch({ source: 'impression', events: impressions }, 'history/impression', 0);
  if (clicks.length) await store.applyBatch({ source: 'click', events: clicks }, 'history/click', 0);
  const events = impressions.length + clicks.length;
  const tile = group.minTileMs;
  // Default span: the entity's events, to one tile past the last (a read sees a tile once it is complete).
  const to = range.to ?? (events ? (Math.floor(last / tile) + 2) * tile : Date.now());
  // Default start: the first event, within the widest span allowed.
  const from =
    range.from ?? Math.max(events ? Math.floor(first / tile) * tile : to - 86_400_000, to - MAX_HISTORY_SPAN_MS);
  if (to - from > MAX_HISTORY_SPAN_MS)
    throw new BadRequest(`time range too wide: ${Math.ceil((to - from) / 86_400_000)} days, at most 31`);
  if (from >= to) throw new BadRequest('from must be before to');
  const step = Math.max(tile, Math.ceil((to - from) / HISTORY_POINTS / tile) * tile);
  const times: number[] = [];
  for (let t = from; t <= to; t += step) times.push(t);
  const values = Array.from({ length: group.width }, () => new Array<number>(times.length));
  for (let i = 0; i < times.length; i++) {
    const v = await readGroup(features, store, group, context, times[i] as number);
    for (let f = 0; f < group.width; f++) (values[f] as number[])[i] = v[f] as number;
  }
  return {
    entity,
    key,
    features: features.names.slice(group.start, group.start + group.width),
    events,
    first: events ? first : null,
    last: events ? last : null,
    times,
    values,
    atValues: at === undefined ? null : await readGroup(features, store, group, context, at),
  };
}
