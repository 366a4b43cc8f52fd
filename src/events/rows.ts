// Reads a CSV or NDJSON file of rows and turns each into checked events, or into a reason tied to its line.
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { parse } from 'csv-parse';
import { type Mapping, mapRow, type Row } from './mapping.ts';
import type { AnyEvent } from './types.ts';

export type RowResult = { line: number; events: AnyEvent[] } | { line: number; error: string };

async function* csvRows(path: string): AsyncGenerator<{ line: number; row: Row }> {
  const parser = createReadStream(path).pipe(parse({ columns: true, info: true, skip_empty_lines: true, trim: true }));
  for await (const { record, info } of parser as AsyncIterable<{ record: Row; info: { lines: number } }>) {
    yield { line: info.lines, row: record };
  }
}

async function* ndjsonRows(path: string): AsyncGenerator<{ line: number; row: Row } | { line: number; error: string }> {
  const lines = createInterface({ input: createReadStream(path), crlfDelay: Number.POSITIVE_INFINITY });
  let n = 0;
  for await (const text of lines) {
    n++;
    if (text.trim() === '') continue;
    try {
      yield { line: n, row: JSON.parse(text) as Row };
    } catch (err) {
      yield { line: n, error: `not JSON: ${(err as Error).message}` };
    }
  }
}

export function formatOf(path: string): 'csv' | 'ndjson' {
  return /\.(nd)?jsonl?$/i.test(path) ? 'ndjson' : 'csv';
}

/** Every row yields its events or an error with its line number: nothing is skipped silently. */
export async function* readRows(
  path: string,
  mapping: Mapping,
  format = formatOf(path),
  now = Date.now(),
): AsyncGenerator<RowResult> {
  const source = format === 'csv' ? csvRows(path) : ndjsonRows(path);
  for await (const item of source) {
    if ('error' in item) {
      yield item;
      continue;
    }
    try {
      const events = mapRow(mapping, item.row, item.line, now);
      yield { line: item.line, events };
    } catch (err) {
      yield { line: item.line, error: (err as Error).message };
    }
  }
}
