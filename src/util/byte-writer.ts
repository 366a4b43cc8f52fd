// Bytes written into one growing buffer, for formats built by hand on hot paths (the parts' JSON, ClickHouse's
// Native blocks): no string or object per piece.

export class ByteWriter {
  protected buf: Buffer;
  /** Bytes written so far. */
  length = 0;

  constructor(bytes = 1 << 16) {
    this.buf = Buffer.allocUnsafe(bytes);
  }

  /** Makes room for `n` more bytes. */
  protected room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(bigger, 0, 0, this.length);
    this.buf = bigger;
  }

  byte(b: number): void {
    this.room(1);
    this.buf[this.length++] = b;
  }

  bytes(b: Buffer): void {
    this.room(b.length);
    for (let i = 0; i < b.length; i++) this.buf[this.length + i] = b[i] as number;
    this.length += b.length;
  }

  /** A string as UTF-8. */
  text(s: string): void {
    this.room(s.length * 3);
    this.length += this.buf.write(s, this.length, 'utf8');
  }

  /** A safe integer's decimal digits, with a leading '-' when negative. */
  integer(x: number): void {
    this.room(17);
    if (x < 0) {
      this.buf[this.length++] = 45;
      x = -x;
    }
    let at = this.length + decimalDigits(x);
    this.length = at;
    do {
      this.buf[--at] = 48 + (x % 10);
      x = Math.floor(x / 10);
    } while (x > 0);
  }

  /** The bytes written (a view of the buffer, which is not written again). */
  done(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

/** How many decimal digits a non-negative integer has. */
export function decimalDigits(x: number): number {
  let digits = 1;
  for (let p = 10; p <= x; p *= 10) digits++;
  return digits;
}
