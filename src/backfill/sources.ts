// Where history is replayed from, each in the order serving saw it: the stream's offline store (by the order the
// stream applied batches, then offsets), or an event-log file (its line order; one partition per event kind, as
// the log lands in Kafka when published: impressions and clicks are separate topics, so the lateness rule keeps a
// watermark per kind; a column file also hands the replay its key ids). The Kafka topics themselves are read by
// kafka-source.ts.
import type { ClickHouseClient } from '@clickhouse/client';
import { type ColumnEvent, isColumnFile, readColumnFile } from '../events/column-file.ts';
import { readEventFile } from '../events/event-file.ts';
import type { AdClick, AdImpression } from '../events/types.ts';
import { KEY_FIELDS } from '../features/entities.ts';
import type { ReplayRecord } from './replay.ts';

/** The event file at `path`: a column file (column-file.ts; with key ids) or NDJSON, by its first bytes. */
export async function* fromEventFile(path: string): AsyncGenerator<ReplayRecord> {
  if (await isColumnFile(path)) {
    for await (const { events, ids } of readColumnFile(path))
      for (let i = 0; i < events.length; i++) {
        const { kind, event } = events[i] as ColumnEvent;
        const idsAt = i * KEY_FIELDS.length;
        if (kind === 'impression') yield { source: kind, partition: 'file/impression', event, ids, idsAt };
        else yield { source: kind, partition: 'file/click', event, ids, idsAt };
      }
    return;
  }
  for await (const { record } of readEventFile(path)) {
    if (record.kind === 'impression') yield { source: 'impression', partition: 'file/impression', event: record.event };
    else if (record.kind === 'click') yield { source: 'click', partition: 'file/click', event: record.event };
  }
}

/** A row of an event table: the Kafka coordinates (topic, partition, batch_seq, offset), then `columns`. */
type Row = [string, number, number, number, ...unknown[]];

/** Batches (by batch_seq) to read: those after `after` and through `through`; unset = no bound that side. */
export interface BatchRange {
  after?: number;
  through?: number;
  /** A SQL condition on both event tables' columns (e.g. one entity's applied events, for the console's history). */
  where?: string;
}

/** An event table's rows in the stream's apply order; times as epoch ms. Rows are arrays (no key per value). */
async function* ordered(
  client: ClickHouseClient,
  table: string,
  columns: readonly string[],
  range: BatchRange,
): AsyncGenerator<Row> {
  const time = (c: string) => (c.endsWith('_time') ? `toUnixTimestamp64Milli(${c})` : c);
  const rs = await client.query({
    query: `SELECT topic, partition, batch_seq, offset, ${columns.map(time).join(', ')}
            FROM ${table} FINAL ${batchFilter(range)} ORDER BY batch_seq, offset`,
    format: 'JSONCompactEachRow',
    clickhouse_settings: { output_format_json_quote_64bit_integers: 0 },
  });
  for await (const rows of rs.stream()) for (const row of rows) yield row.json<Row>();
}

/** The WHERE clause of a batch range ('' for the whole history). */
export function batchFilter({ after, through, where }: BatchRange): string {
  const at = (flag: string, n: number | undefined) => {
    if (n === undefined) return [];
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${flag} must be a whole number, got ${n}`);
    return [`batch_seq ${flag} ${n}`];
  };
  const terms = [...at('>', after), ...at('<=', through), ...(where ? [`(${where})`] : [])];
  return terms.length === 0 ? '' : `WHERE ${terms.join(' AND ')}`;
}

const before = (a: Row, b: Row) => a[2] < b[2] || (a[2] === b[2] && a[3] < b[3]);

const IMPRESSION = [
  'event_id',
  'event_time',
  'request_id',
  ...KEY_FIELDS,
  'device',
  'os',
  'position',
  'bid',
] as const satisfies readonly (keyof AdImpression)[];
const CLICK = [
  'event_id',
  'event_time',
  'impression_id',
  'impression_time',
  ...KEY_FIELDS,
  'device',
  'os',
] as const satisfies readonly (keyof AdClick)[];

/** The event of a row of `columns` (from index 4 on), fields in the event type's order. */
function eventOf<E>(columns: readonly string[], row: Row): E {
  const e: Record<string, unknown> = {};
  for (let k = 0; k < columns.length; k++) e[columns[k] as string] = row[4 + k];
  return e as E;
}

/** "topic/partition" of a row: the last one's string again while the row's coordinates repeat it. */
function partitionNamer(): (row: Row) => string {
  let topic = '';
  let partition = -1;
  let name = '';
  return (row) => {
    if (row[0] !== topic || row[1] !== partition) {
      topic = row[0];
      partition = row[1];
      name = `${topic}/${partition}`;
    }
    return name;
  };
}

/** How many Kafka partitions the offline store's events come from (the replay drops old state once it saw all). */
export async function partitionsIn(client: ClickHouseClient): Promise<number> {
  const rs = await client.query({
    query: `SELECT count() AS n FROM (SELECT DISTINCT topic, partition FROM impressions
            UNION DISTINCT SELECT DISTINCT topic, partition FROM clicks)`,
    format: 'JSONEachRow',
    clickhouse_settings: { output_format_json_quote_64bit_integers: 0 },
  });
  const [row] = await rs.json<{ n: number }>();
  return row?.n ?? 0;
}

/**
 * Every consumed event from the offline store (of the batches in `range`), in the stream's apply order:
 * (batch_seq, offset). Each record carries its batch_seq and offset.
 */
export async function* fromClickHouse(client: ClickHouseClient, range: BatchRange = {}): AsyncGenerator<ReplayRecord> {
  const imps = ordered(client, 'impressions', IMPRESSION, range);
  const clicks = ordered(client, 'clicks', CLICK, range);
  const impPartition = partitionNamer();
  const clickPartition = partitionNamer();
  let i = await imps.next();
  let c = await clicks.next();
  while (!i.done || !c.done) {
    if (!i.done && (c.done || before(i.value, c.value))) {
      const event = eventOf<AdImpression>(IMPRESSION, i.value);
      const [, , batchSeq, offset] = i.value;
      yield { source: 'impression', partition: impPartition(i.value), event, batchSeq, offset };
      i = await imps.next();
    } else if (!c.done) {
      const event = eventOf<AdClick>(CLICK, c.value);
      const [, , batchSeq, offset] = c.value;
      yield { source: 'click', partition: clickPartition(c.value), event, batchSeq, offset };
      c = await clicks.next();
    }
  }
}
