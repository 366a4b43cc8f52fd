// Writes processed batches to the offline store: the events with their coordinates and verdicts, and the tile
// updates the batch made. Each table gets one insert per batch, deduplicated by the batch id, so writing a batch
// again (a retry, a replay after a crash) adds nothing.
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { ClickHouseClient } from '@clickhouse/client';
import type { AdClick, AdImpression } from '../events/types.ts';
import type { Verdict } from '../features/admission.ts';
import type { TileBatch } from '../features/tile-batch.ts';

/**
 * Where a message sat in Kafka; `ingest_time` is its Kafka timestamp (epoch ms); `batch_seq` orders the batches
 * in which the stream applied messages (within a batch, offsets order them).
 */
export interface KafkaCoordinates {
  topic: string;
  partition: number;
  offset: number;
  ingest_time: number;
  batch_seq: number;
}

/** An event as the offline store keeps it. Times are epoch ms. */
export type RecordedRow<E> = E & KafkaCoordinates & { verdict: Verdict };
export type ImpressionRow = RecordedRow<AdImpression>;
export type ClickRow = RecordedRow<AdClick>;

export type TileOp = 'incr' | 'max';

/** One tile update of one batch: a delta for 'incr', a candidate maximum for 'max'. `written_at` is epoch ms. */
export interface TileRow {
  entity: string;
  field: string;
  value: number;
  op: TileOp;
  batch: string;
  written_at: number;
}

/** The feature vector an impression was served (streams/served.ts), in the definitions' order. */
export interface ServedRow extends KafkaCoordinates {
  event_id: string;
  event_time: number;
  vector: Float64Array;
}

export interface OfflineBatch {
  impressions: readonly ImpressionRow[];
  clicks: readonly ClickRow[];
  tiles: readonly TileRow[];
  served?: readonly ServedRow[];
}

/**
 * Epoch ms as 'YYYY-MM-DD hh:mm:ss.sss' (UTC, which is the columns' zone). Not the bare number: JSONEachRow reads
 * an integer into DateTime64(3) as ms ticks up to engine 26.7, but ClickHouse PR #108091 (2026) changes it to
 * seconds, so a number would be read differently by newer servers. This text parses the same everywhere.
 */
export function dateTime64(ms: number): string {
  const iso = new Date(ms).toISOString(); // 2026-01-01T00:00:00.123Z
  return `${iso.slice(0, 10)} ${iso.slice(11, 23)}`;
}

function sqlString(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

const TO_JSON: { [T in keyof OfflineBatch]-?: (row: NonNullable<OfflineBatch[T]>[number]) => string } = {
  served: (r) =>
    JSON.stringify({
      ...r,
      event_time: dateTime64(r.event_time),
      ingest_time: dateTime64(r.ingest_time),
      vector: Array.from(r.vector),
    }),
  impressions: (r) =>
    JSON.stringify({ ...r, event_time: dateTime64(r.event_time), ingest_time: dateTime64(r.ingest_time) }),
  clicks: (r) =>
    JSON.stringify({
      ...r,
      event_time: dateTime64(r.event_time),
      impression_time: dateTime64(r.impression_time),
      ingest_time: dateTime64(r.ingest_time),
    }),
  tiles: (r) => JSON.stringify({ ...r, written_at: dateTime64(r.written_at) }),
};

const TABLE: { [T in keyof OfflineBatch]-?: string } = {
  impressions: 'impressions',
  clicks: 'clicks',
  tiles: 'feature_tiles',
  served: 'served_vectors',
};

export class OfflineSink {
  constructor(private readonly client: ClickHouseClient) {}

  /**
   * Inserts each non-empty part of a batch, one insert per table with insert_deduplication_token
   * `${batchId}:${table}`: writing the same batch id again (within the tables' last 10000 inserts) inserts nothing.
   * Tables are written in turn, not atomically; a failed write should be retried with the same id.
   */
  async writeBatch(batchId: string, rows: OfflineBatch): Promise<void> {
    for (const part of Object.keys(TABLE) as (keyof OfflineBatch)[]) {
      const values = rows[part] ?? [];
      if (values.length === 0) continue;
      const table = TABLE[part];
      const toJson = TO_JSON[part] as (row: (typeof values)[number]) => string;
      let body = '';
      for (const row of values) body += `${toJson(row)}\n`;
      // The token goes in the statement's SETTINGS clause, not clickhouse_settings: on the embedded engine those
      // become session-wide SETs that would silently dedup the client's later token-less inserts (clickhouse.ts).
      // async_insert = 0: insert dedup by token is the synchronous path's (chdb defaults async_insert to 1).
      const settings = `insert_deduplication_token = ${sqlString(`${batchId}:${table}`)}, async_insert = 0`;
      const result = await this.client.exec({
        query: `INSERT INTO ${table} SETTINGS ${settings} FORMAT JSONEachRow`,
        values: Readable.from([body]),
      });
      // The response body (empty for an INSERT) must be consumed to release the HTTP socket.
      result.stream.resume();
      await finished(result.stream);
    }
  }
}

/**
 * feature_tiles rows for a batch's merged updates. Set members (the distinct-count features) are not recorded:
 * feature_tiles holds numbers only, and distinct counts can be recomputed exactly from the event tables.
 */
export function tileRowsOf(updates: TileBatch, batch: string, writtenAt: number = Date.now()): TileRow[] {
  const rows: TileRow[] = [];
  for (const [entity, u] of updates.entities) {
    for (const [field, value] of u.incr) rows.push({ entity, field, value, op: 'incr', batch, written_at: writtenAt });
    for (const [field, value] of u.max) rows.push({ entity, field, value, op: 'max', batch, written_at: writtenAt });
  }
  return rows;
}
