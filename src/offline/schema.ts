// The offline store's tables: every consumed event with where it came from (Kafka coordinates) and what the feature
// engine decided about it, plus the feature history at tile granularity. Idempotent DDL, safe to run at each start.
import type { ClickHouseClient } from '@clickhouse/client';

/**
 * Block-level insert deduplication on a non-replicated MergeTree: the last N insert blocks' hashes (or
 * insert_deduplication_token values) are remembered per table, so a retried insert with the same token is dropped.
 */
const DEDUP_WINDOW = 'non_replicated_deduplication_window = 10000';

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
const EVENT_TABLE_TAIL = `
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (ad_id, event_time, topic, partition, offset)
SETTINGS ${DEDUP_WINDOW}`;

export const OFFLINE_DDL: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS served_vectors (
  event_id String,
  event_time DateTime64(3, 'UTC'),${COORDINATE_COLUMNS},
  vector Array(Float64) COMMENT 'the features a scorer reading the online store then would have used, in definitions order'
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset)
SETTINGS ${DEDUP_WINDOW}`,
  `CREATE TABLE IF NOT EXISTS impressions (
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
)${EVENT_TABLE_TAIL}`,

  `CREATE TABLE IF NOT EXISTS clicks (
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
)${EVENT_TABLE_TAIL}`,

  // Tile deltas as written per batch, one row per entity and batch (its fields, values and ops side by side: a
  // row per tile cost the embedded engine more than everything else the stream inserts). 'incr' values add up, 'max'
  // values take the maximum. Plain MergeTree (every batch's row is kept); a retried batch is kept out by the insert
  // deduplication token, not by merges.
  `CREATE TABLE IF NOT EXISTS feature_tile_batches (
  entity String COMMENT 'entity key, e.g. ad:ad-7',
  tile_fields Array(String) COMMENT 'per value, its series id : tile index, e.g. 0.60:29401234',
  tile_values Array(Int64),
  tile_ops Array(Enum8('incr' = 1, 'max' = 2)),
  batch String COMMENT 'topic/partition/firstOffset-lastOffset that wrote the row',
  written_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY entity
SETTINGS ${DEDUP_WINDOW}`,

  // Each tile's value now, as the online store holds it (for the features that are sums/counts/maxima).
  `CREATE OR REPLACE VIEW feature_tiles_current AS
SELECT
  entity,
  field,
  toString(op) AS op,
  if(op = 'max', max(value), sum(value)) AS value,
  max(written_at) AS written_at
FROM feature_tile_batches
ARRAY JOIN tile_fields AS field, tile_values AS value, tile_ops AS op
GROUP BY entity, field, op`,
];

/** Creates the offline tables and view in the client's current database if they are missing. */
export async function ensureOfflineSchema(client: ClickHouseClient): Promise<void> {
  for (const query of OFFLINE_DDL) await client.command({ query });
}

/** Empties the tables the stream writes (the embedded default rebuilds them from the file log on each start). */
export async function clearStreamTables(client: ClickHouseClient): Promise<void> {
  for (const table of ['impressions', 'clicks', 'feature_tile_batches', 'served_vectors']) {
    await client.command({ query: `TRUNCATE TABLE IF EXISTS ${table}` });
  }
}
