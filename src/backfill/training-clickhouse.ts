// Training sets through ClickHouse: the Parquet export (typed columns, written by the engine from staged RowBinary)
// and the analysts' table, one partition per run, listed with its feature list and definitions version in the
// `training_sets` catalog.
//
// The files are this machine's: offline/clickhouse.ts hands them to the engine (the embedded one reads and writes
// them itself, a server gets them as request bodies and streams results back), so the SQL here is the same for both.
import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { type LocalRows, selectIntoLocalFile, withLocalRows } from '../offline/clickhouse.ts';
import { engineOf, plainName } from '../offline/schema.ts';
import { dateTime64 } from '../offline/sink.ts';
import { ROW_KEYS, type TrainingConverter, type TrainingFormat, type TrainingMeta } from './training-set.ts';

const quote = (s: string) => `'${s.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
const ident = (s: string) => `\`${s.replaceAll('\\', '\\\\').replaceAll('`', '\\`')}\``;

/** The columns of a training CSV or RowBinary staging file as ClickHouse reads them (event_time as epoch ms). */
function fileStructure(features: readonly string[]): string {
  const keys = ROW_KEYS.map((k) => `${ident(k)} ${k === 'event_time' ? 'Int64' : 'String'}`);
  return [...keys, 'label UInt8', ...features.map((f) => `${ident(f)} Float64`)].join(', ');
}

/** The typed training columns (as the Parquet file and the table hold them), without the table's run columns. */
function typedStructure(features: readonly string[]): string[] {
  const low = new Set(['campaign_id', 'advertiser_id', 'category', 'publisher_id', 'device', 'os']);
  const keys = ROW_KEYS.map(
    (k) =>
      `${ident(k)} ${k === 'event_time' ? "DateTime64(3, 'UTC')" : low.has(k) ? 'LowCardinality(String)' : 'String'}`,
  );
  return [...keys, 'label UInt8', ...features.map((f) => `${ident(f)} Float64`)];
}

/** The typed training columns selected from a CSV or staging file: event_time becomes a UTC timestamp (ms). */
function typedColumns(features: readonly string[]): string {
  const keys = ROW_KEYS.map((k) =>
    k === 'event_time' ? `fromUnixTimestamp64Milli(event_time, 'UTC') AS event_time` : ident(k),
  );
  return [...keys, 'label', ...features.map(ident)].join(', ');
}

// Float text is parsed with the exact algorithm, so every value round-trips bit for bit.
const READ_SETTINGS = 'precise_float_parsing = 1';

/** A training-set file (or the RowBinary staging file) as ClickHouse reads it. */
function localRows(path: string, format: TrainingFormat | 'rowbinary', features: readonly string[]): LocalRows {
  if (format === 'parquet') return { path, format: 'Parquet', structure: typedStructure(features).join(', ') };
  const input = format === 'csv' ? 'CSVWithNames' : 'RowBinary';
  return { path, format: input, structure: fileStructure(features), settings: READ_SETTINGS };
}

/** Typed rows of a training-set file read through `from` (withLocalRows), as a SELECT. */
function typedRows(format: TrainingFormat | 'rowbinary', from: string, features: readonly string[]): string {
  return format === 'parquet' ? `SELECT * FROM ${from}` : `SELECT ${typedColumns(features)} FROM ${from}`;
}

/** Converts the staged rows into a Parquet file with typed columns (strings, DateTime64(3, UTC), UInt8, Float64). */
export function parquetConverter(ch: ClickHouseClient): TrainingConverter {
  return (staged, to, features) =>
    withLocalRows(ch, localRows(staged, 'rowbinary', features), (from) =>
      selectIntoLocalFile(ch, typedRows('rowbinary', from, features), to, 'Parquet'),
    );
}

/** A training CSV as the Parquet file `backfill --out FILE.parquet` would have written (typed columns). */
export function csvToParquet(
  ch: ClickHouseClient,
  csv: string,
  to: string,
  features: readonly string[],
): Promise<void> {
  return withLocalRows(ch, localRows(csv, 'csv', features), (from) =>
    selectIntoLocalFile(ch, typedRows('csv', from, features), to, 'Parquet'),
  );
}

// On a cluster the catalog and the training tables are Replicated on every node, not sharded (one Keeper path for
// the whole cluster): a run's partition is replaced at once with REPLACE PARTITION, which a Distributed table can't
// do, and every node reads every run.
const EVERY_NODE = 'all';

/** ` ON CLUSTER name`, or nothing. */
const onCluster = (cluster: string | undefined) => (cluster ? ` ON CLUSTER ${plainName('cluster', cluster)}` : '');

function catalogDdl(cluster: string | undefined): string {
  return `CREATE TABLE IF NOT EXISTS training_sets${onCluster(cluster)} (
  table String,
  run_id String,
  written_at DateTime64(3, 'UTC'),
  definitions_version String,
  features Array(String) COMMENT 'the feature columns, in definitions order',
  source String,
  rows UInt64,
  positives UInt64,
  held_back UInt64,
  attribution_ms UInt64,
  allowed_lateness_ms UInt64,
  first_event_time Nullable(DateTime64(3, 'UTC')),
  last_event_time Nullable(DateTime64(3, 'UTC')),
  file String COMMENT 'the file written beside the table'
)
ENGINE = ${engineOf('ReplacingMergeTree', 'written_at', cluster, EVERY_NODE)}
ORDER BY (table, run_id)
COMMENT 'one row per training-set run written to a table (read with FINAL: a rerun replaces its row)'`;
}

const TABLE_KEYS = `PARTITION BY run_id
ORDER BY (event_time, event_id)`;

function tableDdl(table: string, features: readonly string[], cluster: string | undefined): string {
  const columns = [
    ...typedStructure(features),
    'definitions_version LowCardinality(String)',
    'run_id LowCardinality(String)',
  ];
  return `CREATE TABLE IF NOT EXISTS ${ident(table)}${onCluster(cluster)} (\n  ${columns.join(',\n  ')}\n)
ENGINE = ${engineOf('MergeTree', '', cluster, EVERY_NODE)}
${TABLE_KEYS}
COMMENT 'point-in-time training rows; one partition per run (see training_sets)'`;
}

export const trainingDdl = { catalog: catalogDdl, table: tableDdl };

async function columnsOf(ch: ClickHouseClient, table: string): Promise<string[]> {
  const rs = await ch.query({
    query: `SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String} ORDER BY position`,
    query_params: { t: table },
    format: 'JSONEachRow',
  });
  return (await rs.json<{ name: string }>()).map((r) => r.name);
}

/** Whether `table` is a plain identifier (checked before a long replay, and again before writing). */
export function isPlainTableName(table: string): boolean {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(table);
}

export interface TrainingTableWrite {
  table: string;
  runId: string;
  /** The finished training-set file and its format. */
  file: string;
  format: TrainingFormat;
  meta: TrainingMeta;
  /** Create the tables Replicated on every node of this cluster (see OfflineSchemaOptions.cluster). */
  cluster?: string;
}

/**
 * Loads a finished training-set file into `table` as the partition of `runId`, replacing that run's rows at once
 * (ALTER ... REPLACE PARTITION from a staging table: readers see the old rows or the new, never both), and
 * records the run in `training_sets`.
 */
export async function writeTrainingTable(ch: ClickHouseClient, w: TrainingTableWrite): Promise<void> {
  const { table, runId, meta } = w;
  if (!isPlainTableName(table)) throw new Error(`table name "${table}" is not a plain identifier`);
  await ch.command({ query: tableDdl(table, meta.features, w.cluster) });
  const expected = [...ROW_KEYS, 'label', ...meta.features, 'definitions_version', 'run_id'];
  const actual = await columnsOf(ch, table);
  if (actual.join(',') !== expected.join(',')) {
    throw new Error(
      `table ${table} exists with other columns (${actual.length} vs ${expected.length}: a different feature list or definitions); choose another --table`,
    );
  }
  const staging = `${table}__staging_${randomUUID().replaceAll('-', '')}`;
  // A plain MergeTree on the node the client talks to, also on a cluster (REPLACE PARTITION takes its parts into the
  // Replicated table, which replicates them; a copy of the Replicated engine would join the table's Keeper path).
  await ch.command({ query: `CREATE TABLE ${ident(staging)} AS ${ident(table)} ENGINE = MergeTree ${TABLE_KEYS}` });
  try {
    await withLocalRows(ch, localRows(w.file, w.format, meta.features), (from) =>
      ch.command({
        query: `INSERT INTO ${ident(staging)}
                SELECT *, ${quote(meta.definitions_version)}, ${quote(runId)} FROM (${typedRows(w.format, from, meta.features)})`,
      }),
    );
    await ch.command({ query: `ALTER TABLE ${ident(table)} REPLACE PARTITION ${quote(runId)} FROM ${ident(staging)}` });
  } finally {
    await ch.command({ query: `DROP TABLE IF EXISTS ${ident(staging)}` });
  }
  await ch.command({ query: catalogDdl(w.cluster) });
  await ch.insert({
    table: 'training_sets',
    format: 'JSONEachRow',
    values: [
      {
        table,
        run_id: runId,
        written_at: dateTime64(Date.now()),
        definitions_version: meta.definitions_version,
        features: meta.features,
        source: meta.source,
        rows: meta.rows,
        positives: meta.positives,
        held_back: meta.held_back,
        attribution_ms: meta.attribution_ms,
        allowed_lateness_ms: meta.allowed_lateness_ms,
        first_event_time: meta.first_event_time && dateTime64(Date.parse(meta.first_event_time)),
        last_event_time: meta.last_event_time && dateTime64(Date.parse(meta.last_event_time)),
        file: resolve(w.file), // on the machine that ran the backfill
      },
    ],
  });
}
