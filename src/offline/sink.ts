// Writes processed batches to the offline store: the events with their coordinates and verdicts, and the tile
// updates the batch made. Each table gets one insert per batch, deduplicated by the batch id, so writing a batch
// again (a retry, a replay after a crash) adds nothing.
import type { ClickHouseClient } from '@clickhouse/client';
import type { AdClick, AdImpression } from '../events/types.ts';
import type { Verdict } from '../features/admission.ts';
import type { FeatureSet } from '../features/compile.ts';
import { TileRings } from '../features/tile-rings.ts';
import { type AdmittedEvents, chunkOf } from '../online/part-writer.ts';
import { insertRaw } from './clickhouse.ts';
import { TsvWriter } from './tsv.ts';

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
 * One entity's tile updates of one batch: per (series, tile), a delta ('incr') or a candidate maximum ('max'); the
 * table's tile_fields are "<series>:<tile>". `written_at` is epoch ms.
 */
export interface TileRow {
  entity: string;
  series: string[];
  tiles: number[];
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

/** Epoch ms as DateTime64(3) text (TsvWriter.time), for rows built as objects. */
export function dateTime64(ms: number): string {
  return new TsvWriter(32).time(ms).bytes().toString('latin1');
}

const coordinates = (w: TsvWriter, r: KafkaCoordinates) =>
  w.str(r.topic).tab().int(r.partition).tab().int(r.offset).tab().time(r.ingest_time).tab().int(r.batch_seq);

/** Per table: its columns, and a row written as one TabSeparated line in that order. */
const ROWS: {
  [T in keyof OfflineBatch]-?: {
    columns: string;
    line: (w: TsvWriter, row: NonNullable<OfflineBatch[T]>[number]) => void;
  };
} = {
  served: {
    columns: 'event_id, event_time, topic, partition, offset, ingest_time, batch_seq, vector',
    line: (w, r) => {
      w.str(r.event_id).tab().time(r.event_time).tab();
      coordinates(w, r).tab().numbers(r.vector).end();
    },
  },
  impressions: {
    columns:
      'event_id, event_time, request_id, user_id, ad_id, campaign_id, advertiser_id, category, publisher_id, device, os, position, bid, topic, partition, offset, ingest_time, batch_seq, verdict',
    line: (w, r) => {
      w.str(r.event_id).tab().time(r.event_time).tab().optStr(r.request_id).tab().str(r.user_id).tab();
      w.str(r.ad_id).tab().str(r.campaign_id).tab().str(r.advertiser_id).tab().str(r.category).tab();
      w.str(r.publisher_id).tab().str(r.device).tab().str(r.os).tab().optNum(r.position).tab().optNum(r.bid).tab();
      coordinates(w, r).tab().ascii(r.verdict).end();
    },
  },
  clicks: {
    columns:
      'event_id, event_time, impression_id, impression_time, user_id, ad_id, campaign_id, advertiser_id, category, publisher_id, device, os, topic, partition, offset, ingest_time, batch_seq, verdict',
    line: (w, r) => {
      w.str(r.event_id).tab().time(r.event_time).tab().str(r.impression_id).tab().time(r.impression_time).tab();
      w.str(r.user_id).tab().str(r.ad_id).tab().str(r.campaign_id).tab().str(r.advertiser_id).tab();
      w.str(r.category).tab().str(r.publisher_id).tab().str(r.device).tab().str(r.os).tab();
      coordinates(w, r).tab().ascii(r.verdict).end();
    },
  },
  tiles: {
    columns: 'entity, tile_fields, tile_values, tile_ops, batch, written_at',
    line: (w, r) => {
      w.str(r.entity).tab().open();
      for (let i = 0; i < r.series.length; i++) {
        if (i > 0) w.comma();
        w.quoted(r.series[i] as string, true)
          .ascii(':')
          .int(r.tiles[i] as number)
          .unquote();
      }
      w.close().tab().numbers(r.values).tab().strings(r.ops).tab();
      w.str(r.batch).tab().time(r.written_at).end();
    },
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
   * Tables are written concurrently, not atomically; a failed write should be retried with the same id.
   */
  async writeBatch(batchId: string, rows: OfflineBatch): Promise<void> {
    // Each table's text is made while the one before is being inserted (the engine parses off the event loop).
    const inserts: Promise<void>[] = [];
    for (const part of Object.keys(TABLE) as (keyof OfflineBatch)[]) {
      const values = rows[part] ?? [];
      if (values.length === 0) continue;
      const table = TABLE[part];
      const { columns, line } = ROWS[part] as {
        columns: string;
        line: (w: TsvWriter, row: (typeof values)[number]) => void;
      };
      const w = new TsvWriter(values.length * 256);
      for (const row of values) line(w, row);
      // The token is this statement's setting, not the session's (on the embedded engine a session-wide one would
      // silently dedup the client's later token-less inserts: clickhouse.ts). async_insert = 0: insert dedup by
      // token is the synchronous path's (chdb defaults async_insert to 1).
      inserts.push(
        insertRaw(this.client, {
          table,
          columns: columns.split(', '),
          values: w.bytes(),
          format: 'TabSeparated',
          settings: { insert_deduplication_token: `${batchId}:${table}`, async_insert: 0 },
        }),
      );
    }
    // Every insert ends before a failure is reported: a retry never runs beside an insert of the same token.
    for (const r of await Promise.allSettled(inserts)) if (r.status === 'rejected') throw r.reason;
  }
}

/** Rings for one batch at a time (tileRowsOf runs synchronously: one batch's step never meets another's). */
const batchRings = new WeakMap<FeatureSet, TileRings>();

/** Key values interned by those rings past which they start over (their dictionaries would only grow). */
const MAX_INTERNED = 1_000_000;

/**
 * feature_tile_batches rows for a batch's admitted events: one per entity, each (series, tile) merged over the batch
 * by the engine (a state of the batch alone). Set members (the distinct-count features) are not recorded: the
 * table holds numbers only, and distinct counts can be recomputed exactly from the event tables.
 */
export function tileRowsOf(
  features: FeatureSet,
  admitted: AdmittedEvents,
  batch: string,
  writtenAt: number = Date.now(),
): TileRow[] {
  const rows: TileRow[] = [];
  if (admitted.events.length === 0) return rows;
  let rings = batchRings.get(features);
  if (rings === undefined || rings.interned > MAX_INTERNED) {
    rings = new TileRings(features);
    batchRings.set(features, rings);
  }
  rings.clear();
  rings.stepChunk(chunkOf(admitted, Number.NEGATIVE_INFINITY));
  rings.exportNumbers((entity, series, tiles, values) => {
    rows.push({
      entity,
      series: series.map((s) => s.id),
      tiles,
      values,
      ops: series.map((s) => (s.op.merge === 'add' ? 'incr' : 'max')),
      batch,
      written_at: writtenAt,
    });
  });
  return rows;
}
