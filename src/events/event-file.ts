// The event log as a file: one JSON object per line, {"kind", "ingest_time", "event"}, in ingestion order; or
// (impressions and clicks only) the backfill's binary column file.

import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { writeColumnFile } from './column-file.ts';
import type { LogRecord } from './generator.ts';
import type { AnyEvent } from './types.ts';

/** Writes NDJSON, or for a path ending in .cols the backfill's column file (column-file.ts). */
export async function writeEventFile(path: string, records: Iterable<LogRecord>): Promise<number> {
  if (path.endsWith('.cols')) return writeColumnFile(path, records);
  const out = createWriteStream(path);
  let n = 0;
  for (const { record, ingestTime } of records) {
    const line = `${JSON.stringify({ kind: record.kind, ingest_time: ingestTime, event: record.event })}\n`;
    if (!out.write(line)) await once(out, 'drain');
    n++;
  }
  out.end();
  await once(out, 'finish');
  return n;
}

export async function* readEventFile(path: string): AsyncGenerator<LogRecord> {
  const lines = createInterface({ input: createReadStream(path), crlfDelay: Number.POSITIVE_INFINITY });
  for await (const line of lines) {
    if (line.trim() === '') continue;
    const o = JSON.parse(line) as { kind: AnyEvent['kind']; ingest_time: number; event: AnyEvent['event'] };
    yield { record: { kind: o.kind, event: o.event } as AnyEvent, ingestTime: o.ingest_time };
  }
}
