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

type Row<E> = E & { topic: string; partition: number; batch_seq: number; offset: number };

async function* ordered<E>(client: ClickHouseClient, table: string, times: string[]): AsyncGenerator<Row<E>> {
  const except = ['event_time', ...times, 'ingest_time', 'verdict'].join(', ');
  const rs = await client.query({
    // Times as epoch ms; Kafka coordinates and event fields as they are.
    query: `SELECT * EXCEPT (${except}), ${['event_time', ...times].map((c) => `toUnixTimestamp64Milli(${c}) AS ${c}`).join(', ')}
            FROM ${table} FINAL ORDER BY batch_seq, offset`,
    format: 'JSONEachRow',
    clickhouse_settings: { output_format_json_quote_64bit_integers: 0 },
  });
  for await (const rows of rs.stream()) for (const row of rows) yield row.json<Row<E>>();
}

const before = (a: Row<unknown>, b: Row<unknown>) =>
  a.batch_seq < b.batch_seq || (a.batch_seq === b.batch_seq && a.offset < b.offset);

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

/** Every consumed event from the offline store, in the stream's apply order: (batch_seq, offset). */
export async function* fromClickHouse(client: ClickHouseClient): AsyncGenerator<ReplayRecord> {
  const imps = ordered<AdImpression>(client, 'impressions', []);
  const clicks = ordered<AdClick>(client, 'clicks', ['impression_time']);
  let i = await imps.next();
  let c = await clicks.next();
  while (!i.done || !c.done) {
    if (!i.done && (c.done || before(i.value, c.value))) {
      const { topic, partition, batch_seq, offset, ...event } = i.value;
      yield { source: 'impression', partition: `${topic}/${partition}`, event: event as AdImpression };
      i = await imps.next();
    } else if (!c.done) {
      const { topic, partition, batch_seq, offset, ...event } = c.value;
      yield { source: 'click', partition: `${topic}/${partition}`, event: event as AdClick };
      c = await clicks.next();
    }
  }
}
