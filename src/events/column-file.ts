// The backfill's binary event file (*.cols): impressions and clicks of the log, in its order, in blocks of
// columns. Strings that repeat (the key fields, device, os) are dictionary-encoded once for the whole file, so a
// reader hands the replay dense key ids (no key string to look up per event) and every event of one user shares
// one string; per-event strings (event ids) are stored as bytes. Numbers are float64; null is NaN (JSON has no
// NaN, so nothing else maps to it). Little-endian, columns 8-byte aligned within a block:
//   file:  MAGIC, then blocks
//   block: u32 rows, u32 body bytes, body
//   body:  per dictionary column (DICTIONARY order): u32 new entries, then each as u32 bytes + UTF-8, appended to
//          that column's dictionary (ids count from 0 in order of first use); padding to 8; then
//          f64[rows] per NUMBER column; i32[rows * 6] key ids row by row (KEY_FIELDS order); i32[rows] per other
//          dictionary column; per STRING column: i32[rows] byte length (-1: null or absent), u8 all-ASCII flag,
//          padding to 4, the bytes, padding to 4; u8[rows] kind (0 impression, 1 click).
import { open } from 'node:fs/promises';
import { KEY_FIELDS } from '../features/entities.ts';
import type { LogRecord } from './generator.ts';
import type { AdClick, AdImpression } from './types.ts';

const MAGIC = Buffer.from('TRIBCOL1');
const OTHER = ['device', 'os'] as const;
const DICTIONARY = [...KEY_FIELDS, ...OTHER];
const NUMBER = ['ingest_time', 'event_time', 'impression_time', 'position', 'bid'] as const;
const STRING = ['event_id', 'request_id', 'impression_id'] as const;
const BLOCK_ROWS = 8192;

export type ColumnEvent = { kind: 'impression'; event: AdImpression } | { kind: 'click'; event: AdClick };

/** One decoded block: its events (log order) and their key ids, ids[row * KEY_FIELDS.length + k]. */
export interface ColumnBlock {
  events: ColumnEvent[];
  ids: Int32Array;
}

/** Whether the file starts as a column file does (else it is taken as NDJSON). */
export async function isColumnFile(path: string): Promise<boolean> {
  const f = await open(path, 'r');
  try {
    const head = Buffer.alloc(MAGIC.length);
    const { bytesRead } = await f.read(head, 0, head.length, 0);
    return bytesRead === MAGIC.length && head.equals(MAGIC);
  } finally {
    await f.close();
  }
}

/** Writes the impressions and clicks of `records` (anything else is an error: the file is the replay's input). */
export async function writeColumnFile(path: string, records: Iterable<LogRecord>): Promise<number> {
  const f = await open(path, 'w');
  try {
    await f.write(MAGIC);
    const ids = DICTIONARY.map(() => new Map<string, number>());
    let rows: { record: ColumnEvent; ingestTime: number }[] = [];
    let n = 0;
    const flush = async () => {
      if (rows.length > 0) await f.write(encodeBlock(rows, ids));
      rows = [];
    };
    for (const { record, ingestTime } of records) {
      if (record.kind !== 'impression' && record.kind !== 'click')
        throw new Error(`a column file holds impressions and clicks only, not ${record.kind} events`);
      rows.push({ record, ingestTime });
      n++;
      if (rows.length === BLOCK_ROWS) await flush();
    }
    await flush();
    return n;
  } finally {
    await f.close();
  }
}

function encodeBlock(rows: { record: ColumnEvent; ingestTime: number }[], ids: Map<string, number>[]): Buffer {
  const n = rows.length;
  const parts: Buffer[] = [];
  let size = 0;
  const push = (b: Buffer) => {
    parts.push(b);
    size += b.length;
  };
  const pad = (to: number) => {
    if (size % to !== 0) push(Buffer.alloc(to - (size % to)));
  };
  const field = (e: ColumnEvent['event'], name: string) => (e as unknown as Record<string, unknown>)[name];
  const codes = DICTIONARY.map((name, d) => {
    const dict = ids[d] as Map<string, number>;
    const fresh: Buffer[] = [];
    const column = new Int32Array(n);
    rows.forEach(({ record }, i) => {
      const value = field(record.event, name);
      if (typeof value !== 'string')
        throw new Error(`${record.kind} ${record.event.event_id}: ${name} is not a string`);
      let id = dict.get(value);
      if (id === undefined) {
        id = dict.size;
        dict.set(value, id);
        const bytes = Buffer.from(value, 'utf8');
        fresh.push(u32(bytes.length), bytes);
      }
      column[i] = id;
    });
    push(u32(fresh.length / 2));
    for (const b of fresh) push(b);
    return column;
  });
  pad(8);
  for (const name of NUMBER) {
    const column = new Float64Array(n);
    rows.forEach(({ record, ingestTime }, i) => {
      const value = name === 'ingest_time' ? ingestTime : field(record.event, name);
      column[i] = typeof value === 'number' ? value : Number.NaN;
    });
    push(Buffer.from(column.buffer));
  }
  const keys = new Int32Array(n * KEY_FIELDS.length);
  for (let i = 0; i < n; i++)
    for (let k = 0; k < KEY_FIELDS.length; k++) keys[i * KEY_FIELDS.length + k] = (codes[k] as Int32Array)[i] as number;
  push(Buffer.from(keys.buffer));
  for (let d = KEY_FIELDS.length; d < DICTIONARY.length; d++) push(Buffer.from((codes[d] as Int32Array).buffer));
  for (const name of STRING) {
    const lengths = new Int32Array(n);
    const bytes: Buffer[] = [];
    let ascii = 1;
    rows.forEach(({ record }, i) => {
      const value = field(record.event, name);
      if (typeof value !== 'string') {
        lengths[i] = -1;
        return;
      }
      const b = Buffer.from(value, 'utf8');
      if (b.length !== value.length) ascii = 0;
      lengths[i] = b.length;
      bytes.push(b);
    });
    push(Buffer.from(lengths.buffer));
    push(Buffer.of(ascii));
    pad(4);
    for (const b of bytes) push(b);
    pad(4);
  }
  push(Buffer.from(rows.map(({ record }) => (record.kind === 'impression' ? 0 : 1))));
  return Buffer.concat([u32(n), u32(size), ...parts]);
}

function u32(x: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(x);
  return b;
}

/** The file's blocks in order. */
export async function* readColumnFile(path: string): AsyncGenerator<ColumnBlock> {
  const f = await open(path, 'r');
  try {
    const dictionaries = DICTIONARY.map(() => [] as string[]);
    const head = Buffer.alloc(8);
    let position = MAGIC.length;
    for (;;) {
      const { bytesRead } = await f.read(head, 0, 8, position);
      if (bytesRead === 0) return;
      if (bytesRead < 8) throw new Error(`${path}: truncated block header at byte ${position}`);
      const rows = head.readUInt32LE(0);
      // A buffer of its own: its offset 0 keeps the body's columns aligned for typed-array views.
      const body = Buffer.allocUnsafeSlow(head.readUInt32LE(4));
      const read = await f.read(body, 0, body.length, position + 8);
      if (read.bytesRead < body.length) throw new Error(`${path}: truncated block at byte ${position}`);
      position += 8 + body.length;
      yield decodeBlock(body, rows, dictionaries);
    }
  } finally {
    await f.close();
  }
}

function decodeBlock(body: Buffer, n: number, dictionaries: string[][]): ColumnBlock {
  let at = 0;
  for (const dict of dictionaries) {
    const count = body.readUInt32LE(at);
    at += 4;
    for (let i = 0; i < count; i++) {
      const length = body.readUInt32LE(at);
      dict.push(body.toString('utf8', at + 4, at + 4 + length));
      at += 4 + length;
    }
  }
  at = align(at, 8);
  const base = body.byteOffset;
  const numbers = NUMBER.map((_, c) => new Float64Array(body.buffer, base + at + c * 8 * n, n));
  at += NUMBER.length * 8 * n;
  const ids = new Int32Array(body.buffer, base + at, n * KEY_FIELDS.length);
  at += 4 * n * KEY_FIELDS.length;
  const others = OTHER.map((_, c) => new Int32Array(body.buffer, base + at + c * 4 * n, n));
  at += OTHER.length * 4 * n;
  const strings = STRING.map(() => {
    const lengths = new Int32Array(body.buffer, base + at, n);
    const ascii = body[at + 4 * n] === 1;
    at = align(at + 4 * n + 1, 4);
    const values: (string | null)[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const length = lengths[i] as number;
      if (length < 0) values[i] = null;
      else {
        values[i] = body.toString(ascii ? 'latin1' : 'utf8', at, at + length);
        at += length;
      }
    }
    at = align(at, 4);
    return values;
  });
  const kinds = body.subarray(at, at + n);
  const [, eventTime, impressionTime, position, bid] = numbers as [
    Float64Array,
    Float64Array,
    Float64Array,
    Float64Array,
    Float64Array,
  ];
  const [eventId, requestId, impressionId] = strings as [string[], (string | null)[], string[]];
  const [device, os] = others as [Int32Array, Int32Array];
  const key = (k: number, i: number) =>
    (dictionaries[k] as string[])[ids[i * KEY_FIELDS.length + k] as number] as string;
  const other = (c: number, column: Int32Array, i: number) =>
    (dictionaries[KEY_FIELDS.length + c] as string[])[column[i] as number] as string;
  const nullable = (x: number) => (Number.isNaN(x) ? null : x);
  const events: ColumnEvent[] = new Array(n);
  for (let i = 0; i < n; i++) {
    // Fields in the order of the event types (and of the generator's JSON).
    events[i] =
      kinds[i] === 0
        ? {
            kind: 'impression',
            event: {
              event_id: eventId[i] as string,
              event_time: eventTime[i] as number,
              request_id: requestId[i] as string | null,
              user_id: key(0, i),
              ad_id: key(1, i),
              campaign_id: key(2, i),
              advertiser_id: key(3, i),
              category: key(4, i),
              publisher_id: key(5, i),
              device: other(0, device, i),
              os: other(1, os, i),
              position: nullable(position[i] as number),
              bid: nullable(bid[i] as number),
            },
          }
        : {
            kind: 'click',
            event: {
              event_id: eventId[i] as string,
              event_time: eventTime[i] as number,
              impression_id: impressionId[i] as string,
              impression_time: impressionTime[i] as number,
              user_id: key(0, i),
              ad_id: key(1, i),
              campaign_id: key(2, i),
              advertiser_id: key(3, i),
              category: key(4, i),
              publisher_id: key(5, i),
              device: other(0, device, i),
              os: other(1, os, i),
            },
          };
  }
  return { events, ids };
}

function align(at: number, to: number): number {
  return Math.ceil(at / to) * to;
}
