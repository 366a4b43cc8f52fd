// The third leg of the parity check (streaming == backfill == SQL): every feature of every applied impression,
// computed by ClickHouse from the offline event tables alone. Deliberately independent of the engine: nothing here
// calls the admission, window or compile code; it reads the declarative definitions (entity fields, aggregation
// source/column/scale, window length and tile width, ratio priors), takes each op's own SQL from its unit (ops/),
// and re-states the rules in SQL:
//
// - Admission, recomputed (the stored `verdict` is not trusted): per (topic, partition) in offset order, a record
//   is late iff some strictly earlier record exists and event_time < max(earlier event_time) - allowed lateness;
//   among the non-late records, a repeated event_id is a duplicate; the rest are applied.
// - Order: record j precedes impression i iff (batch_seq, offset)_j < (batch_seq, offset)_i.
// - A window (length L, tile width g, n = L / g) read at the impression's time t aggregates the applied source
//   events that precede it, share the entity's key fields, and whose tile floor(event_time / g) lies in
//   [floor(t / g) - n, floor(t / g) - 1].
//
// Shape of the query. Counts, sums and last-seen are "2-D dominance" aggregates (earlier in the log AND in a tile
// range), which a plain join makes quadratic in popular entities. Instead, per group and per series (source, tile
// width) every applied source event carries running aggregates within its (key, tile) in log order (window
// functions); each impression is expanded to the tiles its windows cover and ASOF-joined, per tile, to the last
// source event of that (key, tile) before it. Rows: impressions x tiles per series, whatever the entity's traffic.
// Exact distinct counts are not additive, so each (key, tile, value) keeps its first position in the log and is
// joined to impressions through a coarse time bucket (so only the tile range around t is ever paired).
import type { ClickHouseClient } from '@clickhouse/client';
import type avro from 'avsc';
import { avroType, schemaText } from '../events/catalog.ts';
import type { Aggregation, FeatureGroup, Source } from '../features/define.ts';
import { opOf, type SqlWindow } from '../features/ops/index.ts';

export interface ParitySqlOptions {
  /** The admission rule's allowed lateness (ms). Default 1 h, the stream's default. */
  allowedLatenessMs?: number;
  /**
   * Evaluate the admitted-records subquery once (`WITH ... AS MATERIALIZED`, a recent ClickHouse feature that the
   * embedded 26.7 engine has) instead of once per reference. Default true; set false for servers without it (same
   * result, slower).
   */
  materialize?: boolean;
}

export const DEFAULT_ALLOWED_LATENESS_MS = 3_600_000;

const SOURCE_ID: Record<Source, number> = { impression: 0, click: 1 };

/** Columns of the event tables; what exists where (the tables' DDL in src/offline/schema.ts). */
/** Each event table's event columns: the fields of its Avro schema. */
const columnsOf = (kind: Source) =>
  new Set((avroType(schemaText(kind)) as avro.types.RecordType).fields.map((f) => f.name));
const IMPRESSION_COLUMNS = columnsOf('impression');
const CLICK_COLUMNS = columnsOf('click');
const TABLES: Record<Source, { name: string; columns: Set<string> }> = {
  impression: { name: 'impressions', columns: IMPRESSION_COLUMNS },
  click: { name: 'clicks', columns: CLICK_COLUMNS },
};

/** Log order must be total: (batch_seq, offset) identifies a record (a batch is one partition of one topic). */
const TIE_MESSAGE = 'two applied records share (batch_seq, offset): the log order is ambiguous';

function sqlString(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

function ident(name: string): string {
  return `\`${name.replace(/\\/g, '\\\\').replace(/`/g, '\\`')}\``;
}

/** A finite number as a SQL literal that parses back to the same double. */
function num(x: number): string {
  if (!Number.isFinite(x)) throw new Error(`not a finite number: ${x}`);
  return `toFloat64(${String(x)})`;
}

function int(x: number): string {
  if (!Number.isSafeInteger(x)) throw new Error(`not a safe integer: ${x}`);
  return String(x);
}

/** floor(a / b) as an Int64, with the float division JavaScript's Math.floor(a / b) uses. */
function floorDiv(a: string, b: number): string {
  return `toInt64(floor((${a}) / ${int(b)}))`;
}

/** Math.round(x): the nearest integer, halves towards +infinity (ClickHouse's round() rounds halves to even). */
function jsRound(x: string): string {
  return `if(${x} - floor(${x}) = 0.5, ceil(${x}), round(${x}))`;
}

/** A feature column of the result: its name and the SQL that yields it in the final SELECT. */
interface Column {
  name: string;
  expr: string;
}

interface Series {
  sid: number;
  source: Source;
  tileMs: number;
  /** Tiles the longest window on this series reads. */
  tiles: number;
}

interface GroupPlan {
  /** CTE definitions (name AS (...)). */
  ctes: string[];
  /** LEFT JOINs of the final SELECT, each by the impression's log position `iord`. */
  joins: string[];
  columns: Column[];
}

class Builder {
  /** Per-source expressions added to the `src` CTE: name -> per-source SQL. */
  readonly extra: { name: string; impression: string; click: string }[] = [];
  private readonly keyCols = new Set<string>();

  /** A string column present in both tables (an entity field or a distinct column). */
  stringColumn(column: string): string {
    for (const s of ['impression', 'click'] as const) {
      if (!TABLES[s].columns.has(column)) throw new Error(`column ${column} is not in the ${TABLES[s].name} table`);
    }
    this.keyCols.add(column);
    return column;
  }

  /** For an op that sums a per-event value (its sqlEventValue): that value per source event, as column `name`. */
  eventValue(agg: Aggregation, name: string): string {
    const per = (s: Source): string =>
      opOf(agg).sqlEventValue?.(agg, s, {
        column: (c) =>
          c === 'event_time' ? 'toUnixTimestamp64Milli(event_time)' : TABLES[s].columns.has(c) ? ident(c) : null,
        num,
        round: jsRound,
      }) ?? 'CAST(NULL AS Nullable(Float64))';
    this.extra.push({ name, impression: per('impression'), click: per('click') });
    return name;
  }

  srcSelect(source: Source): string {
    const t = TABLES[source];
    const cols = [
      `${SOURCE_ID[source]} AS source`,
      'topic',
      'partition',
      'offset',
      'event_id',
      'toUnixTimestamp64Milli(event_time) AS t',
      // The log position: (batch_seq, offset) as one orderable number, for ASOF joins.
      'bitShiftLeft(toUInt128(batch_seq), 64) + offset AS ord',
      ...[...this.keyCols].filter((c) => c !== 'event_id').map((c) => `toString(${c}) AS ${c}`),
      ...this.extra.map((e) => `${e[source]} AS ${e.name}`),
    ];
    return `SELECT ${cols.join(', ')} FROM ${t.name} FINAL`;
  }
}

/**
 * What an op states a window's value with (ops/op.ts), over the joined rows named here: `r` the tile rows (running
 * count c, latest time mx, sums s_*; distinct: member v, tile), `l` the impression (time it, tile T).
 */
function sqlWindow(o: { inWindow?: string; sum?: string }): SqlWindow {
  return {
    inWindow: o.inWindow ?? 'true',
    count: 'r.c',
    latest: 'r.mx',
    sum: o.sum ?? 'NULL',
    readTime: 'l.it',
    member: 'r.v',
    tile: 'r.tile',
    readTile: 'l.T',
    num,
  };
}

function planGroup(b: Builder, g: FeatureGroup, gi: number, next: () => number): GroupPlan {
  const ctes: string[] = [];
  const joins: string[] = [];
  const fields = g.entity.fields.map((f) => b.stringColumn(f));
  const keyEq = (l: string, r: string) => fields.map((f) => `${l}.${f} = ${r}.${f}`).join(' AND ');
  const keyList = fields.join(', ');

  // Values of each aggregation/window in definition order (ratios need them), plus where they live.
  const valueSql = new Map<string, string>();
  const columns: Column[] = [];
  const sumNames = new Map<Aggregation, string>();

  // ---- Additive aggregations (merged by adding or by the latest): one series per (source, tile width). ----
  const series: Series[] = [];
  for (const a of g.aggregations) {
    if (opOf(a).merge === 'union') continue;
    for (const w of a.windows) {
      let s = series.find((x) => x.source === a.source && x.tileMs === w.tileMs);
      if (!s) {
        s = { sid: series.length, source: a.source, tileMs: w.tileMs, tiles: 0 };
        series.push(s);
      }
      s.tiles = Math.max(s.tiles, w.tiles);
    }
    if (opOf(a).sqlEventValue) sumNames.set(a, b.eventValue(a, `v${gi}_${g.aggregations.indexOf(a)}`));
  }
  const add = `g${gi}`;
  if (series.length > 0) {
    const sums = [...sumNames.values()];
    const tileArray = (source: Source) => {
      const items = series
        .filter((s) => s.source === source)
        .map((s) => `(toUInt8(${s.sid}), ${floorDiv('t', s.tileMs)})`);
      return items.length ? `[${items.join(', ')}]` : "CAST([], 'Array(Tuple(UInt8, Int64))')";
    };
    const sources = [...new Set(series.map((s) => s.source))];
    // Right side: each applied source event once per series of its source, with running aggregates within
    // (series, key, tile) in log order: after event j, they cover every event of that tile up to j inclusive.
    ctes.push(`${add}_r AS (
  SELECT sid, ${keyList}, tile, ord,
    count() OVER w AS c,
    max(t) OVER w AS mx${sums.map((v) => `,\n    sum(ifNull(${v}, 0)) OVER w AS s_${v}`).join('')}
  FROM (
    SELECT p.1 AS sid, p.2 AS tile, ord, t, ${keyList}${sums.map((v) => `, ${v}`).join('')}
    FROM applied
    ARRAY JOIN if(source = ${SOURCE_ID.impression}, ${tileArray('impression')}, ${tileArray('click')}) AS p
    WHERE source IN (${sources.map((s) => SOURCE_ID[s]).join(', ')})
  )
  WINDOW w AS (PARTITION BY sid, ${keyList}, tile ORDER BY ord ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)`);
    // Left side: each applied impression once per (series, d), d = 1..tiles: the tile d before its own.
    const pairs = series.flatMap((s) => Array.from({ length: s.tiles }, (_, i) => `(${s.sid}, ${i + 1})`));
    const tileOfSid = `multiIf(${series.map((s) => `sid = ${s.sid}, ${floorDiv('t', s.tileMs)}`).join(', ')}, 0)`;
    ctes.push(`${add}_l AS (
  SELECT ord AS iord, t AS it, ${keyList}, toUInt8(p.1) AS sid, toInt64(p.2) AS d, ${tileOfSid} - d AS tile
  FROM applied
  ARRAY JOIN [${pairs.join(', ')}] AS p
  WHERE source = ${SOURCE_ID.impression}
)`);
    const aggs: string[] = [];
    g.aggregations.forEach((a) => {
      if (opOf(a).merge === 'union') return;
      for (const w of a.windows) {
        const s = series.find((x) => x.source === a.source && x.tileMs === w.tileMs) as Series;
        const at = sqlWindow({ inWindow: `r.sid = ${s.sid} AND l.d <= ${w.tiles}`, sum: `r.s_${sumNames.get(a)}` });
        const f = `f${next()}`;
        aggs.push(`toFloat64(${opOf(a).sql(a, w, at)}) AS ${f}`);
        valueSql.set(`${a.name}/${w.name}`, `${add}.${f}`);
      }
    });
    ctes.push(`${add} AS (
  SELECT l.iord AS iord,
    ${aggs.join(',\n    ')}
  FROM ${add}_l AS l
  ASOF LEFT JOIN ${add}_r AS r ON l.sid = r.sid AND ${keyEq('l', 'r')} AND l.tile = r.tile AND l.iord > r.ord
  GROUP BY l.iord, l.it
)`);
    joins.push(`LEFT JOIN ${add} ON ${add}.iord = imp.ord`);
  }

  // ---- Distinct counts: per (aggregation, tile width). ----
  g.aggregations.forEach((a, ai) => {
    const op = opOf(a);
    if (op.merge !== 'union' || !op.memberColumn) return;
    const column = b.stringColumn(op.memberColumn(a));
    const widths = [...new Set(a.windows.map((w) => w.tileMs))];
    widths.forEach((tileMs, wi) => {
      const windows = a.windows.filter((w) => w.tileMs === tileMs);
      const n = Math.max(...windows.map((w) => w.tiles));
      const name = `g${gi}d${ai}_${wi}`;
      // First log position of each value per (key, tile); bucket = tile / n so that an impression's n tiles lie
      // in at most two buckets (its own and the previous one).
      ctes.push(`${name}_r AS (
  SELECT ${keyList}, ${floorDiv('t', tileMs)} AS tile, ${floorDiv('tile', n)} AS bucket, ${column} AS v, min(ord) AS first_ord
  FROM applied
  WHERE source = ${SOURCE_ID[a.source]}
  GROUP BY ${keyList}, tile, v
)`);
      const aggs = windows.map((w) => {
        const f = `f${next()}`;
        valueSql.set(`${a.name}/${w.name}`, `ifNull(${name}.${f}, 0)`);
        return `toFloat64(${op.sql(a, w, sqlWindow({}))}) AS ${f}`;
      });
      ctes.push(`${name} AS (
  SELECT l.iord AS iord,
    ${aggs.join(',\n    ')}
  FROM (
    SELECT ord AS iord, ${keyList}, ${floorDiv('t', tileMs)} AS T,
      arrayJoin(arrayDistinct([${floorDiv(`T - ${n}`, n)}, ${floorDiv('T - 1', n)}])) AS bucket
    FROM applied
    WHERE source = ${SOURCE_ID.impression}
  ) AS l
  INNER JOIN ${name}_r AS r ON ${keyEq('l', 'r')} AND l.bucket = r.bucket
  WHERE r.tile >= l.T - ${n} AND r.tile < l.T AND r.first_ord < l.iord
  GROUP BY l.iord
)`);
      joins.push(`LEFT JOIN ${name} ON ${name}.iord = imp.ord`);
    });
  });

  // ---- Columns in FeatureSet order: aggregations x windows, then ratios x the numerator's windows. ----
  for (const a of g.aggregations) {
    for (const w of a.windows) {
      columns.push({
        name: `${g.entity.name}__${a.name}_${w.name}`,
        expr: valueSql.get(`${a.name}/${w.name}`) as string,
      });
    }
  }
  for (const r of g.ratios) {
    const numerator = g.aggregations.find((a) => a.name === r.numerator);
    const denominator = g.aggregations.find((a) => a.name === r.denominator);
    if (!numerator || !denominator) throw new Error(`${g.entity.name}.${r.name}: ratio of unknown aggregations`);
    for (const w of numerator.windows) {
      const nv = valueSql.get(`${r.numerator}/${w.name}`);
      const dv = valueSql.get(`${r.denominator}/${w.name}`);
      if (!nv || !dv) throw new Error(`${g.entity.name}.${r.name}: no ${w.name} window on ${r.denominator}`);
      columns.push({
        name: `${g.entity.name}__${r.name}_${w.name}`,
        expr: `(${nv} + ${num(r.prior.rate * r.prior.weight)}) / (${dv} + ${num(r.prior.weight)})`,
      });
    }
  }
  return { ctes, joins, columns };
}

/** The feature names the query returns, in FeatureSet order (computed from the definitions, not the engine). */
export function parityFeatureNames(groups: readonly FeatureGroup[]): string[] {
  const names: string[] = [];
  for (const g of groups) {
    for (const a of g.aggregations) for (const w of a.windows) names.push(`${g.entity.name}__${a.name}_${w.name}`);
    for (const r of g.ratios) {
      const numerator = g.aggregations.find((a) => a.name === r.numerator);
      for (const w of numerator?.windows ?? []) names.push(`${g.entity.name}__${r.name}_${w.name}`);
    }
  }
  return names;
}

/**
 * One ClickHouse query over the offline tables `impressions` and `clicks` (current database) whose result has one
 * row per impression the admission rule applies, in log order: `event_id`, then one Float64 column per feature,
 * named and ordered as FeatureSet names them.
 */
export function paritySql(groups: readonly FeatureGroup[], options: ParitySqlOptions = {}): string {
  const lateness = options.allowedLatenessMs ?? DEFAULT_ALLOWED_LATENESS_MS;
  if (!Number.isSafeInteger(lateness) || lateness < 0) throw new Error(`bad allowed lateness: ${lateness}`);
  const b = new Builder();
  let counter = 0;
  const next = () => counter++;
  const plans = groups.map((g, gi) => planGroup(b, g, gi, next));
  const materialized = options.materialize === false ? '' : ' MATERIALIZED';

  const ctes = [
    `src AS (
  ${b.srcSelect('impression')}
  UNION ALL
  ${b.srcSelect('click')}
)`,
    // Admission. max over the strictly earlier records of the partition; the first record has none (row 1).
    `admitted AS (
  SELECT * EXCEPT (rn, prev_max) FROM (
    SELECT *,
      row_number() OVER (PARTITION BY source, topic, partition ORDER BY offset) AS rn,
      max(t) OVER (PARTITION BY source, topic, partition ORDER BY offset
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_max
    FROM src
  )
  WHERE rn = 1 OR t >= prev_max - ${int(lateness)}
)`,
    // Dedup among the on-time records: the first of each event_id per partition is applied.
    `applied AS${materialized} (
  SELECT * EXCEPT (dn) FROM (
    SELECT *, row_number() OVER (PARTITION BY source, topic, partition, event_id ORDER BY offset) AS dn
    FROM admitted
  )
  WHERE dn = 1
)`,
    ...plans.flatMap((p) => p.ctes),
  ];
  const columns = plans.flatMap((p) => p.columns);
  const select = ['imp.event_id AS event_id', ...columns.map((c) => `toFloat64(${c.expr}) AS ${ident(c.name)}`)];
  return `WITH
${ctes.join(',\n')}
SELECT
  ${select.join(',\n  ')}
FROM (SELECT event_id, ord FROM applied WHERE source = ${SOURCE_ID.impression}) AS imp
${plans.flatMap((p) => p.joins).join('\n')}
WHERE throwIf((SELECT count() != uniqExact(ord) FROM applied), ${sqlString(TIE_MESSAGE)}) = 0
ORDER BY imp.ord`;
}

/**
 * Runs paritySql: event_id -> feature vector in FeatureSet order. Should two applied impressions share an event_id
 * (in different partitions), the later one in the log wins here; use paritySql directly to see both.
 */
export async function sqlFeatures(
  client: ClickHouseClient,
  groups: readonly FeatureGroup[],
  options: ParitySqlOptions = {},
): Promise<Map<string, Float64Array>> {
  const n = parityFeatureNames(groups).length;
  const rs = await client.query({ query: paritySql(groups, options), format: 'JSONCompactEachRow' });
  const out = new Map<string, Float64Array>();
  for await (const rows of rs.stream<[string, ...number[]]>()) {
    for (const row of rows) {
      const [eventId, ...values] = row.json();
      const v = new Float64Array(n);
      for (let i = 0; i < n; i++) v[i] = Number(values[i]);
      out.set(eventId, v);
    }
  }
  return out;
}
