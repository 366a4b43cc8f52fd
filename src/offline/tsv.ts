// TabSeparated rows written straight into bytes: a field at a time, no string per field or line (building the text
// as strings cost more CPU and garbage than the engine's own insert of it).

/** The escape letter of each byte TabSeparated escapes (backslash, tab, newline, carriage return, NUL); 0 = none. */
const FIELD_ESCAPE = new Uint8Array(128);
FIELD_ESCAPE[0x5c] = 0x5c; // \\
FIELD_ESCAPE[0x09] = 0x74; // \t
FIELD_ESCAPE[0x0a] = 0x6e; // \n
FIELD_ESCAPE[0x0d] = 0x72; // \r
FIELD_ESCAPE[0x00] = 0x30; // \0
/** Inside a quoted array element the quote is escaped too. */
const QUOTED_ESCAPE = FIELD_ESCAPE.slice();
QUOTED_ESCAPE[0x27] = 0x27; // \'

const DAY_MS = 86_400_000;

export class TsvWriter {
  private buf: Buffer;
  private pos = 0;
  /** The day (epoch days) of the last time written, and its 'YYYY-MM-DD ' bytes: rows of a batch share a few days. */
  private day = Number.NaN;
  private readonly dayText = Buffer.alloc(11);

  constructor(bytes = 1 << 16) {
    this.buf = Buffer.allocUnsafe(bytes);
  }

  /** The rows written so far (a view of the writer's buffer). */
  bytes(): Buffer {
    return this.buf.subarray(0, this.pos);
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  private byte(c: number): this {
    this.room(1);
    this.buf[this.pos++] = c;
    return this;
  }

  tab(): this {
    return this.byte(0x09);
  }

  /** Ends a row. */
  end(): void {
    this.byte(0x0a);
  }

  /** A string field, escaped. */
  str(s: string): this {
    this.escaped(s, FIELD_ESCAPE);
    return this;
  }

  /** A nullable string field (\N for null). */
  optStr(s: string | null | undefined): this {
    return s == null ? this.nullField() : this.str(s);
  }

  /** A number field: integers digit by digit, others as JavaScript prints them. */
  num(n: number): this {
    if (Number.isSafeInteger(n)) this.int(n);
    else this.ascii(String(n));
    return this;
  }

  optNum(n: number | null | undefined): this {
    return n == null ? this.nullField() : this.num(n);
  }

  /**
   * Epoch ms as DateTime64(3) text 'YYYY-MM-DD hh:mm:ss.sss' (UTC, the columns' zone). Not the bare number: a text
   * format reads an integer into DateTime64(3) as ms ticks up to engine 26.7, but ClickHouse PR #108091 (2026)
   * changes it to seconds, so a number would be read differently by newer servers. This text parses the same
   * everywhere.
   */
  time(ms: number): this {
    const day = Math.floor(ms / DAY_MS);
    if (day !== this.day) {
      this.day = day;
      this.dayText.write(`${new Date(day * DAY_MS).toISOString().slice(0, 10)} `, 'latin1');
    }
    let r = ms - day * DAY_MS;
    const h = Math.floor(r / 3_600_000);
    r -= h * 3_600_000;
    const m = Math.floor(r / 60_000);
    r -= m * 60_000;
    const sec = Math.floor(r / 1000);
    const milli = Math.floor(r - sec * 1000);
    this.room(23);
    const b = this.buf;
    let p = this.pos;
    p += this.dayText.copy(b, p);
    b[p++] = 0x30 + Math.floor(h / 10);
    b[p++] = 0x30 + (h % 10);
    b[p++] = 0x3a;
    b[p++] = 0x30 + Math.floor(m / 10);
    b[p++] = 0x30 + (m % 10);
    b[p++] = 0x3a;
    b[p++] = 0x30 + Math.floor(sec / 10);
    b[p++] = 0x30 + (sec % 10);
    b[p++] = 0x2e;
    b[p++] = 0x30 + Math.floor(milli / 100);
    b[p++] = 0x30 + (Math.floor(milli / 10) % 10);
    b[p++] = 0x30 + (milli % 10);
    this.pos = p;
    return this;
  }

  /** An Array(String) field: quoted elements with backslash escapes (the engine reads an array's text in one pass). */
  strings(xs: readonly string[]): this {
    this.open();
    for (let i = 0; i < xs.length; i++) {
      if (i > 0) this.comma();
      this.quoted(xs[i] as string);
    }
    return this.close();
  }

  /** An Array of numbers field. */
  numbers(xs: ArrayLike<number>): this {
    this.open();
    for (let i = 0; i < xs.length; i++) {
      if (i > 0) this.comma();
      this.num(xs[i] as number);
    }
    return this.close();
  }

  /** Pieces of an array field written element by element: open(), elements with comma() between, close(). */
  open(): this {
    return this.byte(0x5b);
  }

  comma(): this {
    return this.byte(0x2c);
  }

  close(): this {
    return this.byte(0x5d);
  }

  /** A quoted array element: the quote written, then `s` escaped, then (unless `more` follows) the closing quote. */
  quoted(s: string, more = false): this {
    this.byte(0x27);
    this.escaped(s, QUOTED_ESCAPE);
    return more ? this : this.unquote();
  }

  /** Ends a quoted element begun with quoted(s, true). */
  unquote(): this {
    return this.byte(0x27);
  }

  /** Text known to need no escapes (digits, names of our own). */
  ascii(s: string): this {
    this.room(s.length);
    this.pos += this.buf.write(s, this.pos, 'latin1');
    return this;
  }

  /** A non-negative or negative integer, digit by digit. */
  int(n: number): this {
    this.room(21);
    const b = this.buf;
    if (n < 0) {
      b[this.pos++] = 0x2d;
      n = -n;
    }
    if (n < 10) {
      b[this.pos++] = 0x30 + n;
      return this;
    }
    let digits = 1;
    for (let t = n; t >= 10; t = Math.floor(t / 10)) digits++;
    let p = this.pos + digits;
    this.pos = p;
    while (n >= 10) {
      const q = Math.floor(n / 10);
      b[--p] = 0x30 + (n - q * 10);
      n = q;
    }
    b[--p] = 0x30 + n;
    return this;
  }

  private nullField(): this {
    return this.byte(0x5c).byte(0x4e);
  }

  private escaped(s: string, escapes: Uint8Array): void {
    const n = s.length;
    this.room(n * 2);
    const b = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        // Not ASCII: the rest as UTF-8, escaping its bytes (multi-byte sequences are all ≥ 0x80, never escaped).
        this.pos = p;
        this.escapedBytes(Buffer.from(s.slice(i), 'utf8'), escapes);
        return;
      }
      const e = escapes[c] as number;
      if (e !== 0) {
        b[p++] = 0x5c;
        b[p++] = e;
      } else b[p++] = c;
    }
    this.pos = p;
  }

  private escapedBytes(bytes: Buffer, escapes: Uint8Array): void {
    this.room(bytes.length * 2);
    const b = this.buf;
    let p = this.pos;
    for (const c of bytes) {
      const e = c < 0x80 ? (escapes[c] as number) : 0;
      if (e !== 0) {
        b[p++] = 0x5c;
        b[p++] = e;
      } else b[p++] = c;
    }
    this.pos = p;
  }
}
