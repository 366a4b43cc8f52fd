// The offline store's tables: every consumed event with where it came from (Kafka coordinates) and what the feature
// engine decided about it, plus the feature history at tile granularity. Idempotent DDL, safe to run at each start.
import type { ClickHouseClient } from '@clickhouse/client';

/**
 * Block-level insert deduplication on a non-replicated MergeTree: the last N insert blocks' hashes (or
 * insert_deduplication_token values) are remembered per table, so a retried insert with the same token is dropped.
 */
const DEDUP_WINDOW = 'non_replicated_deduplication_window = 10000';
/** The same window for Replicated tables, where the hashes live in Keeper per shard. */
const REPLICATED_DEDUP_WINDOW = 'replicated_deduplication_window = 10000';

/** Where a message sat in Kafka, and when the stream applied it. */
const COORDINATE_COLUMNS = `
  topic LowCardinality(String),
  partition UInt32,
  offset UInt64,
  ingest_time DateTime64(3, 'UTC') COMMENT 'Kafka message timestamp',
  batch_seq UInt64 COMMENT 'order in which the stream applied this batch: replay by (batch_seq, offset) to see events as serving did'`;

/** Columns shared by both event tables: the coordinates and what the feature engine decided. */
const RECORD_COLUMNS = `${COORDINATE_COLUMNS},
  verdict LowCardinality(String) COMMENT 'applied | late | duplicate, as decided by the feature engine'`;

// ReplacingMergeTree: rows with equal ORDER BY keys collapse on merge (or at once with FINAL), the last inserted
// winning. The key ends with the Kafka coordinates, so exactly the re-inserts of one message collapse (its
// ad_id/event_time never change), and it starts with (ad_id, event_time) for the usual per-ad, time-range queries.
// Partitions are months of event time; a message always lands in the same one, so duplicates meet on merge.
const EVENT_TABLE_KEYS = `PARTITION BY toYYYYMM(event_time)
ORDER BY (ad_id, event_time, topic, partition, offset)`;

/**
 * On a cluster, rows go to shards by their Kafka partition: a stream batch is one partition of one topic, so each
 * insert lands whole on one shard (one block, one dedup token), and the re-inserts of a message meet the original
 * on its shard, where ReplacingMergeTree and FINAL can collapse them.
 */
const BY_KAFKA_PARTITION = 'cityHash64(topic, partition)';

interface Table {
  name: string;
  columns: string;
  engine: 'MergeTree' | 'ReplacingMergeTree';
  keys: string;
  /** The Distributed table's sharding key on a cluster. */
  shardBy: string;
}

const TABLES: readonly Table[] = [
  {
    name: 'served_vectors',
    columns: `
  event_id String,
  event_time DateTime64(3, 'UTC'),${COORDINATE_COLUMNS},
  vector Array(Float64) COMMENT 'the features a scorer reading the online store then would have used, in definitions order'
`,
    engine: 'ReplacingMergeTree',
    keys: 'ORDER BY (topic, partition, offset)',
    shardBy: BY_KAFKA_PARTITION,
  },
  {
    name: 'impressions',
    columns: `
  event_id String,
  event_time DateTime64(3, 'UTC'),
  request_id Nullable(String),
  user_id String,
  ad_id String,
  campaign_id LowCardinality(String),
  advertiser_id LowCardinality(String),
  category LowCardinality(String),
  publisher_id LowCardinality(String),
  device LowCardinality(String),
  os LowCardinality(String),
  position Nullable(Int32),
  bid Nullable(Float64),${RECORD_COLUMNS}
`,
    engine: 'ReplacingMergeTree',
    keys: EVENT_TABLE_KEYS,
    shardBy: BY_KAFKA_PARTITION,
  },
  {
    name: 'clicks',
    columns: `
  event_id String,
  event_time DateTime64(3, 'UTC'),
  impression_id String,
  impression_time DateTime64(3, 'UTC'),
  user_id String,
  ad_id String,
  campaign_id LowCardinality(String),
  advertiser_id LowCardinality(String),
  category LowCardinality(String),
  publisher_id LowCardinality(String),
  device LowCardinality(String),
  os LowCardinality(String),${RECORD_COLUMNS}
`,
    engine: 'ReplacingMergeTree',
    keys: EVENT_TABLE_KEYS,
    shardBy: BY_KAFKA_PARTITION,
  },
  // Tile deltas as written per batch, one row per entity and batch (its fields, values and ops side by side: a
  // row per tile cost the embedded engine more than everything else the stream inserts). 'incr' values add up, 'max'
  // values take the maximum. Plain MergeTree (every batch's row is kept); a retried batch is kept out by the insert
  // deduplication token, not by merges. On a cluster an entity's rows share a shard, so feature_tiles_current
  // groups each entity on its shard; a retried batch splits the same way, each shard dropping its part by the token.
  {
    name: 'feature_tile_batches',
    columns: `
  entity String COMMENT 'entity key, e.g. ad:ad-7',
  tile_fields Array(String) COMMENT 'per value, its series id : tile index, e.g. 0.60:29401234',
  tile_values Array(Int64),
  tile_ops Array(Enum8('incr' = 1, 'max' = 2)),
  batch String COMMENT 'topic/partition/firstOffset-lastOffset that wrote the row',
  written_at DateTime64(3, 'UTC')
`,
    engine: 'MergeTree',
    keys: 'ORDER BY entity',
    shardBy: 'cityHash64(entity)',
  },
  // The parity checks' results, for the console. Each `tributary parity` run: one row, per feature its mismatches.
  {
    name: 'parity_runs',
    columns: `
  run_at DateTime64(3, 'UTC'),
  impressions UInt64,
  missing_served UInt64,
  missing_sql UInt64,
  mismatches UInt64,
  features Array(String),
  served_mismatches Array(UInt64) COMMENT 'per feature (same index as features): served != backfill',
  sql_mismatches Array(UInt64) COMMENT 'per feature: SQL != backfill',
  examples String COMMENT 'JSON: per feature, one mismatching impression'
`,
    engine: 'MergeTree',
    keys: 'ORDER BY run_at',
    shardBy: 'rand()',
  },
  // The live check (backfill/live-parity.ts): one row per flush, counting what it compared since the last one. The
  // newest row's last_batch_seq is where a restarted check resumes.
  {
    name: 'parity_live',
    columns: `
  at DateTime64(3, 'UTC'),
  checked UInt64 COMMENT 'sampled impressions compared',
  missing UInt64 COMMENT 'sampled impressions with no served vector',
  features Array(String),
  mismatches Array(UInt64) COMMENT 'per feature (same index as features)',
  last_batch_seq UInt64 COMMENT 'checked through this batch (the stream apply order)'
`,
    engine: 'MergeTree',
    keys: 'ORDER BY at',
    shardBy: 'rand()',
  },
  // One row per served feature value the live check found wrong. Keyed by the impression's coordinates: a range
  // checked again after a crash before its parity_live row collapses onto the first rows (FINAL or a merge).
  {
    name: 'parity_mismatches',
    columns: `
  at DateTime64(3, 'UTC'),
  event_id String,
  topic LowCardinality(String),
  partition UInt32,
  offset UInt64,
  event_time DateTime64(3, 'UTC'),
  feature String,
  served Float64,
  recomputed Float64
`,
    engine: 'ReplacingMergeTree',
    keys: 'ORDER BY (topic, partition, offset, feature)',
    shardBy: BY_KAFKA_PARTITION,
  },
];

// Each tile's value now, as the online store holds it (for the features that are sums/counts/maxima). A plain view:
// on a cluster it reads the Distributed table, so it sees every shard.
const VIEW = (onCluster: string) => `CREATE OR REPLACE VIEW feature_tiles_current${onCluster} AS
SELECT
  entity,
  field,
  toString(op) AS op,
  if(op = 'max', max(value), sum(value)) AS value,
  max(written_at) AS written_at
FROM feature_tile_batches
ARRAY JOIN tile_fields AS field, tile_values AS value, tile_ops AS op
GROUP BY entity, field, op`;

export interface OfflineSchemaOptions {
  /**
   * A cluster of the server's remote_servers (with Keeper, and the {shard} and {replica} macros per node): each
   * table becomes a Replicated local table `<name>_local` on every node plus a Distributed table `<name>` over them,
   * so readers and writers use the same names as on one server.
   */
  cluster?: string;
}

/** A cluster or database name as an identifier (plain names only: they also go into Keeper paths). */
export function plainName(what: string, name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
    throw new Error(`${what} "${name}" is not a plain name (letters, digits, _)`);
  return name;
}

/**
 * `engine` (with its `args`, e.g. a version column), or on a cluster its Replicated variant, whose replicas of one
 * shard share a Keeper path. `shard` = '{shard}' for sharded tables, a constant for a table every node holds whole.
 */
export function engineOf(engine: string, args: string, cluster: string | undefined, shard = '{shard}'): string {
  if (!cluster) return args ? `${engine}(${args})` : engine;
  const replication = `'/clickhouse/tables/${shard}/{database}/{table}', '{replica}'`;
  return `Replicated${engine}(${args ? `${replication}, ${args}` : replication})`;
}

/**
 * The offline schema's DDL, idempotent. `database` names where the Distributed tables find their local ones on each
 * node (needed with a cluster only).
 */
export function offlineDdl(options: OfflineSchemaOptions & { database?: string } = {}): string[] {
  const { cluster } = options;
  if (!cluster) {
    const ddl = TABLES.map(
      (t) => `CREATE TABLE IF NOT EXISTS ${t.name} (${t.columns})
ENGINE = ${t.engine}
${t.keys}
SETTINGS ${DEDUP_WINDOW}`,
    );
    return [...ddl, VIEW('')];
  }
  const on = ` ON CLUSTER ${plainName('cluster', cluster)}`;
  const database = plainName('database', options.database ?? 'default');
  const ddl = TABLES.flatMap((t) => [
    `CREATE TABLE IF NOT EXISTS ${t.name}_local${on} (${t.columns})
ENGINE = ${engineOf(t.engine, '', cluster)}
${t.keys}
SETTINGS ${REPLICATED_DEDUP_WINDOW}`,
    `CREATE TABLE IF NOT EXISTS ${t.name}${on} AS ${t.name}_local
ENGINE = Distributed(${cluster}, ${database}, ${t.name}_local, ${t.shardBy})`,
  ]);
  return [...ddl, VIEW(on)];
}

/** Creates the offline tables and view in the client's current database if they are missing. */
export async function ensureOfflineSchema(client: ClickHouseClient, options: OfflineSchemaOptions = {}): Promise<void> {
  let database: string | undefined;
  if (options.cluster) {
    const rs = await client.query({ query: 'SELECT currentDatabase() AS d', format: 'JSONEachRow' });
    database = (await rs.json<{ d: string }>())[0]?.d;
  }
  for (const query of offlineDdl({ ...options, database })) await client.command({ query });
}

/** Empties the tables the stream writes (the embedded default rebuilds them from the file log on each start). */
export async function clearStreamTables(client: ClickHouseClient): Promise<void> {
  for (const table of ['impressions', 'clicks', 'feature_tile_batches', 'served_vectors']) {
    await client.command({ query: `TRUNCATE TABLE IF EXISTS ${table}` });
  }
}
