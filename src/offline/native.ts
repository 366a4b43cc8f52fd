// ClickHouse's Native format, written column by column into one buffer: the engine reads it with hardly any parsing
// (no text to scan, no numbers or times to convert, as TabSeparated made it do for every row). Column
// types here are what the bytes hold; an insert converts them to the table's (String into LowCardinality(String),
// Int8 into Enum8).

/** One column of a block: its name, the type its bytes hold, and how a row's value is written. */
export interface NativeColumn<R> {
  readonly name: string;
  readonly type: string;
  /** Writes the column's values of all rows. */
  write(w: NativeWriter, rows: readonly R[]): void;
}

const TWO_32 = 2 ** 32;

export class NativeWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(bytes = 1 << 16) {
    this.buf = Buffer.allocUnsafe(bytes);
  }

  /** What was written (a view of the writer's buffer). */
  bytes(): Buffer {
    return this.buf.subarray(0, this.pos);
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  u8(x: number): void {
    this.room(1);
    this.buf[this.pos++] = x;
  }

  /** An unsigned LEB128 (lengths and counts). */
  varint(x: number): void {
    this.room(10);
    while (x >= 0x80) {
      this.buf[this.pos++] = (x & 0x7f) | 0x80;
      x = Math.floor(x / 128);
    }
    this.buf[this.pos++] = x;
  }

  /** A String value: its UTF-8 length, then the bytes. */
  string(s: string): void {
    // Short ASCII strings (ids, names) are most values: their length is their byte count.
    const n = s.length;
    if (n < 128) {
      this.room(1 + n * 3);
      const at = this.pos + 1;
      const written = this.buf.write(s, at, 'utf8');
      if (written < 128) {
        this.buf[this.pos] = written;
        this.pos = at + written;
        return;
      }
    }
    const bytes = Buffer.byteLength(s);
    this.varint(bytes);
    this.room(bytes);
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }

  /** The String "<a>:<n>" for an integer `n`, without making it. */
  stringColonInt(a: string, n: number): void {
    const abs = Math.abs(n);
    let digits = 1;
    for (let x = abs; x >= 10; x = Math.floor(x / 10)) digits++;
    const sign = n < 0 ? 1 : 0;
    const head = Buffer.byteLength(a);
    const length = head + 1 + sign + digits;
    this.varint(length);
    this.room(length);
    this.pos += this.buf.write(a, this.pos, 'utf8');
    this.buf[this.pos++] = 0x3a;
    if (sign) this.buf[this.pos++] = 0x2d;
    for (let i = digits - 1, x = abs; i >= 0; i--, x = Math.floor(x / 10)) this.buf[this.pos + i] = 0x30 + (x % 10);
    this.pos += digits;
  }

  i32(x: number): void {
    this.room(4);
    this.buf.writeInt32LE(x, this.pos);
    this.pos += 4;
  }

  u32(x: number): void {
    this.room(4);
    this.buf.writeUInt32LE(x, this.pos);
    this.pos += 4;
  }

  /** An integer within ±2^53 as Int64 / UInt64 (two's complement, little-endian). */
  i64(x: number): void {
    if (!Number.isSafeInteger(x)) throw new RangeError(`not a 64-bit integer: ${x}`);
    this.room(8);
    const hi = Math.floor(x / TWO_32);
    this.buf.writeUInt32LE(x - hi * TWO_32, this.pos);
    this.buf.writeInt32LE(hi, this.pos + 4);
    this.pos += 8;
  }

  f64(x: number): void {
    this.room(8);
    this.buf.writeDoubleLE(x, this.pos);
    this.pos += 8;
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
  return w.bytes();
}

type Get<R, T> = (r: R) => T;

/** Column makers by the type their bytes hold. */
export const native = {
  string: <R>(name: string, get: Get<R, string>): NativeColumn<R> => ({
    name,
    type: 'String',
    write: (w, rows) => {
      for (const r of rows) w.string(get(r));
    },
  }),
  optString: <R>(name: string, get: Get<R, string | null | undefined>): NativeColumn<R> => ({
    name,
    type: 'Nullable(String)',
    write: (w, rows) => {
      for (const r of rows) w.u8(get(r) == null ? 1 : 0);
      for (const r of rows) w.string(get(r) ?? '');
    },
  }),
  /** Epoch ms. */
  time: <R>(name: string, get: Get<R, number>): NativeColumn<R> => ({
    name,
    type: "DateTime64(3, 'UTC')",
    write: (w, rows) => {
      for (const r of rows) w.i64(get(r));
    },
  }),
  u32: <R>(name: string, get: Get<R, number>): NativeColumn<R> => ({
    name,
    type: 'UInt32',
    write: (w, rows) => {
      for (const r of rows) w.u32(get(r));
    },
  }),
  u64: <R>(name: string, get: Get<R, number>): NativeColumn<R> => ({
    name,
    type: 'UInt64',
    write: (w, rows) => {
      for (const r of rows) w.i64(get(r));
    },
  }),
  optI32: <R>(name: string, get: Get<R, number | null | undefined>): NativeColumn<R> => ({
    name,
    type: 'Nullable(Int32)',
    write: (w, rows) => {
      for (const r of rows) w.u8(get(r) == null ? 1 : 0);
      for (const r of rows) w.i32(get(r) ?? 0);
    },
  }),
  optF64: <R>(name: string, get: Get<R, number | null | undefined>): NativeColumn<R> => ({
    name,
    type: 'Nullable(Float64)',
    write: (w, rows) => {
      for (const r of rows) w.u8(get(r) == null ? 1 : 0);
      for (const r of rows) w.f64(get(r) ?? 0);
    },
  }),
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
