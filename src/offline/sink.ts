// Writes processed batches to the offline store: the events with their coordinates and verdicts, and the tile
// updates the batch made. Each table gets one insert per batch, deduplicated by the batch id, so writing a batch
// again (a retry, a replay after a crash) adds nothing.
import type { ClickHouseClient } from '@clickhouse/client';
import type { AdClick, AdImpression } from '../events/types.ts';
import type { Verdict } from '../features/admission.ts';
import type { Series } from '../features/compile.ts';
import type { TileBatch } from '../features/tile-batch.ts';
import { insertRaw } from './clickhouse.ts';

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

/**
 * One entity's tile updates of one batch: per field, a delta ('incr') or a candidate maximum ('max'). `written_at`
 * is epoch ms.
 */
export interface TileRow {
  entity: string;
  fields: string[];
  values: number[];
  ops: TileOp[];
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

/** The day (epoch days) dateTime64 formatted last, and its 'YYYY-MM-DD ' text: rows of a batch share a few days. */
let lastDay = Number.NaN;
let lastDayText = '';

const pad2 = (n: number) => (n < 10 ? `0${n}` : `${n}`);

/**
 * Epoch ms as 'YYYY-MM-DD hh:mm:ss.sss' (UTC, which is the columns' zone). Not the bare number: a text format reads
 * an integer into DateTime64(3) as ms ticks up to engine 26.7, but ClickHouse PR #108091 (2026) changes it to
 * seconds, so a number would be read differently by newer servers. This text parses the same everywhere.
 */
export function dateTime64(ms: number): string {
  const day = Math.floor(ms / 86_400_000);
  if (day !== lastDay) {
    lastDay = day;
    lastDayText = `${new Date(day * 86_400_000).toISOString().slice(0, 10)} `;
  }
  let r = ms - day * 86_400_000;
  const h = Math.floor(r / 3_600_000);
  r -= h * 3_600_000;
  const m = Math.floor(r / 60_000);
  r -= m * 60_000;
  const sec = Math.floor(r / 1000);
  const milli = r - sec * 1000;
  return `${lastDayText}${pad2(h)}:${pad2(m)}:${pad2(sec)}.${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}`;
}

const ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\\0' };

/** A string as a TabSeparated field: backslash, tab, newline, carriage return and NUL escaped. */
function tsv(s: string): string {
  return /[\\\t\n\r\0]/.test(s) ? s.replace(/[\\\t\n\r\0]/g, (c) => ESCAPES[c] as string) : s;
}

/**
 * An Array(String) as a TabSeparated field: quoted elements with backslash escapes (the engine reads an array's
 * text in one pass: its elements are not field-escaped first).
 */
const textArray = (xs: readonly string[]) => `[${xs.map((x) => `'${tsv(x).replace(/'/g, "\\'")}'`).join(',')}]`;

/** Nullable columns as TabSeparated fields (\N for null). */
const optText = (v: string | null | undefined) => (v == null ? '\\N' : tsv(v));
const optNumber = (v: number | null | undefined) => (v == null ? '\\N' : String(v));

const coordinates = (r: KafkaCoordinates) =>
  `${tsv(r.topic)}\t${r.partition}\t${r.offset}\t${dateTime64(r.ingest_time)}\t${r.batch_seq}`;

/**
 * Per table: its columns, and a row as one TabSeparated line in that order (text the embedded engine takes inline,
 * built without an object per row).
 */
const ROWS: {
  [T in keyof OfflineBatch]-?: { columns: string; line: (row: NonNullable<OfflineBatch[T]>[number]) => string };
} = {
  served: {
    columns: 'event_id, event_time, topic, partition, offset, ingest_time, batch_seq, vector',
    line: (r) => `${tsv(r.event_id)}\t${dateTime64(r.event_time)}\t${coordinates(r)}\t[${r.vector.join(',')}]`,
  },
  impressions: {
    columns:
      'event_id, event_time, request_id, user_id, ad_id, campaign_id, advertiser_id, category, publisher_id, device, os, position, bid, topic, partition, offset, ingest_time, batch_seq, verdict',
    line: (r) =>
      `${tsv(r.event_id)}\t${dateTime64(r.event_time)}\t${optText(r.request_id)}\t${tsv(r.user_id)}\t${tsv(r.ad_id)}\t${tsv(r.campaign_id)}\t${tsv(r.advertiser_id)}\t${tsv(r.category)}\t${tsv(r.publisher_id)}\t${tsv(r.device)}\t${tsv(r.os)}\t${optNumber(r.position)}\t${optNumber(r.bid)}\t${coordinates(r)}\t${r.verdict}`,
  },
  clicks: {
    columns:
      'event_id, event_time, impression_id, impression_time, user_id, ad_id, campaign_id, advertiser_id, category, publisher_id, device, os, topic, partition, offset, ingest_time, batch_seq, verdict',
    line: (r) =>
      `${tsv(r.event_id)}\t${dateTime64(r.event_time)}\t${tsv(r.impression_id)}\t${dateTime64(r.impression_time)}\t${tsv(r.user_id)}\t${tsv(r.ad_id)}\t${tsv(r.campaign_id)}\t${tsv(r.advertiser_id)}\t${tsv(r.category)}\t${tsv(r.publisher_id)}\t${tsv(r.device)}\t${tsv(r.os)}\t${coordinates(r)}\t${r.verdict}`,
  },
  tiles: {
    columns: 'entity, tile_fields, tile_values, tile_ops, batch, written_at',
    line: (r) =>
      `${tsv(r.entity)}\t${textArray(r.fields)}\t[${r.values.join(',')}]\t${textArray(r.ops)}\t${tsv(r.batch)}\t${dateTime64(r.written_at)}`,
  },
};

const TABLE: { [T in keyof OfflineBatch]-?: string } = {
  impressions: 'impressions',
  clicks: 'clicks',
  tiles: 'feature_tile_batches',
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
      const { columns, line } = ROWS[part] as { columns: string; line: (row: (typeof values)[number]) => string };
      let body = '';
      for (const row of values) body += `${line(row)}\n`;
      // The token is this statement's setting, not the session's (on the embedded engine a session-wide one would
      // silently dedup the client's later token-less inserts: clickhouse.ts). async_insert = 0: insert dedup by
      // token is the synchronous path's (chdb defaults async_insert to 1).
      await insertRaw(this.client, {
        table,
        columns: columns.split(', '),
        values: Buffer.from(body),
        format: 'TabSeparated',
        settings: { insert_deduplication_token: `${batchId}:${table}`, async_insert: 0 },
      });
    }
  }
}

/**
 * feature_tile_batches rows for a batch's updates: one per entity, each field ("<series>:<tile>") merged over the
 * batch. Set members (the distinct-count features) are not recorded: the table holds numbers only, and distinct
 * counts can be recomputed exactly from the event tables.
 */
export function tileRowsOf(updates: TileBatch, batch: string, writtenAt: number = Date.now()): TileRow[] {
  const rows: TileRow[] = [];
  const merged = new Map<Series, Map<number, number>>();
  for (const [entity, u] of updates.entities) {
    merged.clear();
    for (let i = 0; i < u.length; i += 3) {
      const series = u[i] as Series;
      const merge = series.op.merge;
      if (merge === 'union') continue;
      let tiles = merged.get(series);
      if (tiles === undefined) {
        tiles = new Map();
        merged.set(series, tiles);
      }
      const tile = u[i + 1] as number;
      const value = u[i + 2] as number;
      const held = tiles.get(tile);
      tiles.set(tile, held === undefined ? value : merge === 'add' ? held + value : Math.max(held, value));
    }
    if (merged.size === 0) continue;
    const row: TileRow = { entity, fields: [], values: [], ops: [], batch, written_at: writtenAt };
    merged.forEach((tiles, series) => {
      const op: TileOp = series.op.merge === 'add' ? 'incr' : 'max';
      tiles.forEach((value, tile) => {
        row.fields.push(`${series.id}:${tile}`);
        row.values.push(value);
        row.ops.push(op);
      });
    });
    rows.push(row);
  }
  return rows;
}
