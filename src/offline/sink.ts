// Writes processed batches to the offline store: the events with their coordinates and verdicts, and the tile
// updates the batch made. Each table gets one insert per batch, deduplicated by the batch id, so writing a batch
// again (a retry, a replay after a crash) adds nothing.
import type { ClickHouseClient } from '@clickhouse/client';
import type { AdClick, AdImpression } from '../events/types.ts';
import type { Verdict } from '../features/admission.ts';
import type { FeatureSet } from '../features/compile.ts';
import { TileRings } from '../features/tile-rings.ts';
import { type AdmittedEvents, chunkOf } from '../online/part-writer.ts';
import { insertNative } from './clickhouse.ts';
import { type NativeColumn, native, nativeBlock } from './native.ts';

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

/** Epoch ms as DateTime64(3) text (the ISO form), for rows built as objects. */
export function dateTime64(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 23);
}

const coordinates = <R extends KafkaCoordinates>(): NativeColumn<R>[] => [
  native.string('topic', (r) => r.topic),
  native.u32('partition', (r) => r.partition),
  native.u64('offset', (r) => r.offset),
  native.time('ingest_time', (r) => r.ingest_time),
  native.u64('batch_seq', (r) => r.batch_seq),
];

/** The dimensions both event tables hold. */
const dimensions = <R extends AdClick | AdImpression>(): NativeColumn<R>[] => [
  native.string('user_id', (r) => r.user_id),
  native.string('ad_id', (r) => r.ad_id),
  native.string('campaign_id', (r) => r.campaign_id),
  native.string('advertiser_id', (r) => r.advertiser_id),
  native.string('category', (r) => r.category),
  native.string('publisher_id', (r) => r.publisher_id),
  native.string('device', (r) => r.device),
  native.string('os', (r) => r.os),
];

const OPS: Record<TileOp, number> = { incr: 1, max: 2 };

/** Per table: its columns, as written (schema.ts has their types there). */
const COLUMNS: { [T in keyof OfflineBatch]-?: NativeColumn<NonNullable<OfflineBatch[T]>[number]>[] } = {
  served: [
    native.string('event_id', (r) => r.event_id),
    native.time('event_time', (r) => r.event_time),
    ...coordinates<ServedRow>(),
    native.array(
      'vector',
      'Float64',
      (r) => r.vector.length,
      (w, r) => {
        for (const x of r.vector) w.f64(x);
      },
    ),
  ],
  impressions: [
    native.string('event_id', (r) => r.event_id),
    native.time('event_time', (r) => r.event_time),
    native.optString('request_id', (r) => r.request_id),
    ...dimensions<ImpressionRow>(),
    native.optI32('position', (r) => r.position),
    native.optF64('bid', (r) => r.bid),
    ...coordinates<ImpressionRow>(),
    native.string('verdict', (r) => r.verdict),
  ],
  clicks: [
    native.string('event_id', (r) => r.event_id),
    native.time('event_time', (r) => r.event_time),
    native.string('impression_id', (r) => r.impression_id),
    native.time('impression_time', (r) => r.impression_time),
    ...dimensions<ClickRow>(),
    ...coordinates<ClickRow>(),
    native.string('verdict', (r) => r.verdict),
  ],
  tiles: [
    native.string('entity', (r) => r.entity),
    native.array(
      'tile_fields',
      'String',
      (r) => r.series.length,
      (w, r) => {
        for (let i = 0; i < r.series.length; i++) w.stringColonInt(r.series[i] as string, r.tiles[i] as number);
      },
    ),
    native.array(
      'tile_values',
      'Int64',
      (r) => r.values.length,
      (w, r) => {
        for (const x of r.values) w.i64(x);
      },
    ),
    native.array(
      'tile_ops',
      "Enum8('incr' = 1, 'max' = 2)",
      (r) => r.ops.length,
      (w, r) => {
        for (const op of r.ops) w.byte(OPS[op]);
      },
    ),
    native.string('batch', (r) => r.batch),
    native.time('written_at', (r) => r.written_at),
  ],
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
    // Each table's block is made while the one before is being inserted (the engine reads it off the event loop).
    const inserts: Promise<void>[] = [];
    for (const part of Object.keys(TABLE) as (keyof OfflineBatch)[]) {
      const values = rows[part] ?? [];
      if (values.length === 0) continue;
      const table = TABLE[part];
      const columns = COLUMNS[part] as NativeColumn<(typeof values)[number]>[];
      // The token is this statement's setting, not the session's (on the embedded engine a session-wide one would
      // silently dedup the client's later token-less inserts: clickhouse.ts). async_insert = 0: insert dedup by
      // token is the synchronous path's (chdb defaults async_insert to 1). insert_distributed_sync = 1: through a
      // cluster's Distributed table the insert returns once the shards have the rows, token included, so the stream
      // commits offsets only after that; a queued (background) insert could also batch blocks and defeat the token.
      inserts.push(
        insertNative(this.client, {
          table,
          columns: columns.map((c) => c.name),
          block: nativeBlock(columns, values),
          settings: { insert_deduplication_token: `${batchId}:${table}`, async_insert: 0, insert_distributed_sync: 1 },
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
