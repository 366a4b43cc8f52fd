// ClickHouse's Native format, written column by column into one buffer: the engine reads it with hardly any parsing
// (no text to scan, no numbers or times to convert, as TabSeparated made it do for every row). Column
// types here are what the bytes hold; an insert converts them to the table's (String into LowCardinality(String),
// Int8 into Enum8).
import { ByteWriter, decimalDigits } from '../util/byte-writer.ts';

/** One column of a block: its name, the type its bytes hold, and how a row's value is written. */
export interface NativeColumn<R> {
  readonly name: string;
  readonly type: string;
  /** Writes the column's values of all rows. */
  write(w: NativeWriter, rows: readonly R[]): void;
}

const TWO_32 = 2 ** 32;

export class NativeWriter extends ByteWriter {
  /** An unsigned LEB128 (lengths and counts). */
  varint(x: number): void {
    this.room(10);
    while (x >= 0x80) {
      this.buf[this.length++] = (x & 0x7f) | 0x80;
      x = Math.floor(x / 128);
    }
    this.buf[this.length++] = x;
  }

  /** A String value: its UTF-8 length, then the bytes. */
  string(s: string): void {
    // Short ASCII strings (ids, names) are most values: their length is their byte count.
    const n = s.length;
    if (n < 128) {
      this.room(1 + n * 3);
      const at = this.length + 1;
      const written = this.buf.write(s, at, 'utf8');
      if (written < 128) {
        this.buf[this.length] = written;
        this.length = at + written;
        return;
      }
    }
    this.varint(Buffer.byteLength(s));
    this.text(s);
  }

  /** The String "<a>:<n>" for an integer `n`, without making it. */
  stringColonInt(a: string, n: number): void {
    this.varint(Buffer.byteLength(a) + 1 + (n < 0 ? 1 : 0) + decimalDigits(Math.abs(n)));
    this.text(a);
    this.byte(0x3a);
    this.integer(n);
  }

  i32(x: number): void {
    this.room(4);
    this.buf.writeInt32LE(x, this.length);
    this.length += 4;
  }

  u32(x: number): void {
    this.room(4);
    this.buf.writeUInt32LE(x, this.length);
    this.length += 4;
  }

  /** An integer within ±2^53 as Int64 / UInt64 (two's complement, little-endian). */
  i64(x: number): void {
    if (!Number.isSafeInteger(x)) throw new RangeError(`not a 64-bit integer: ${x}`);
    this.room(8);
    const hi = Math.floor(x / TWO_32);
    this.buf.writeUInt32LE(x - hi * TWO_32, this.length);
    this.buf.writeInt32LE(hi, this.length + 4);
    this.length += 8;
  }

  f64(x: number): void {
    this.room(8);
    this.buf.writeDoubleLE(x, this.length);
    this.length += 8;
  }
}

/** A block of rows in Native format: the counts, then each column's name, type and values. */
export function nativeBlock<R>(columns: readonly NativeColumn<R>[], rows: readonly R[], bytesPerRow = 256): Buffer {
  const w = new NativeWriter(64 + rows.length * bytesPerRow);
  w.varint(columns.length);
  w.varint(rows.length);
  for (const c of columns) {
    w.string(c.name);
    w.string(c.type);
    c.write(w, rows);
  }
  return w.done();
}

type Get<R, T> = (r: R) => T;
type Put<T> = (w: NativeWriter, x: T) => void;

/** A column of one value per row. */
const scalar =
  <T>(type: string, put: Put<T>) =>
  <R>(name: string, get: Get<R, T>): NativeColumn<R> => ({
    name,
    type,
    write: (w, rows) => {
      for (const r of rows) put(w, get(r));
    },
  });

/** A Nullable column: the rows' null flags, then their values (`empty` in place of a null). */
const nullable =
  <T>(type: string, put: Put<T>, empty: T) =>
  <R>(name: string, get: Get<R, T | null | undefined>): NativeColumn<R> => ({
    name,
    type: `Nullable(${type})`,
    write: (w, rows) => {
      for (const r of rows) w.byte(get(r) == null ? 1 : 0);
      for (const r of rows) put(w, get(r) ?? empty);
    },
  });

const putString: Put<string> = (w, x) => w.string(x);
const putI64: Put<number> = (w, x) => w.i64(x);

/** Column makers by the type their bytes hold. */
export const native = {
  string: scalar('String', putString),
  optString: nullable<string>('String', putString, ''),
  /** Epoch ms. */
  time: scalar("DateTime64(3, 'UTC')", putI64),
  u32: scalar<number>('UInt32', (w, x) => w.u32(x)),
  u64: scalar('UInt64', putI64),
  f64: scalar<number>('Float64', (w, x) => w.f64(x)),
  optI32: nullable<number>('Int32', (w, x) => w.i32(x), 0),
  optF64: nullable<number>('Float64', (w, x) => w.f64(x), 0),
  /** An Array column: the running end offsets of the rows' arrays (`count` elements each), then every row's elements. */
  array: <R>(
    name: string,
    element: string,
    count: Get<R, number>,
    put: (w: NativeWriter, r: R) => void,
  ): NativeColumn<R> => ({
    name,
    type: `Array(${element})`,
    write: (w, rows) => {
      let end = 0;
      for (const r of rows) {
        end += count(r);
        w.i64(end);
      }
      for (const r of rows) put(w, r);
    },
  }),
};
