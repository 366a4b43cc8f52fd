import { describe, expect, it } from 'vitest';
import { TsvWriter } from '../../src/offline/tsv.ts';

const text = (write: (w: TsvWriter) => void, bytes?: number) => {
  const w = new TsvWriter(bytes);
  write(w);
  return w.bytes().toString('utf8');
};

describe('TsvWriter', () => {
  it('writes integers digit by digit and other numbers as JavaScript prints them', () => {
    const ns = [0, 7, 10, 99, 100, 1234567890123, Number.MAX_SAFE_INTEGER, -1, -4096, 0.5, 1e21, -2.25];
    const got = text((w) => {
      for (const [i, n] of ns.entries()) (i > 0 ? w.tab() : w).num(n);
    });
    expect(got).toBe(ns.map(String).join('\t'));
  });

  it('writes DateTime64(3) text equal to the ISO time, across days', () => {
    const times = [0, 1, 999, 86_399_999, 86_400_000, Date.UTC(2026, 11, 6, 18, 5, 9, 42), Date.UTC(1999, 0, 1)];
    for (const t of times)
      expect(text((w) => w.time(t))).toBe(new Date(t).toISOString().replace('T', ' ').replace('Z', ''));
  });

  it('escapes what TabSeparated escapes, in fields and quoted array elements, non-ASCII included', () => {
    const odd = "a\tb\nc\\d\re\0f'g é😀\t";
    expect(text((w) => w.str(odd))).toBe("a\\tb\\nc\\\\d\\re\\0f'g é😀\\t");
    expect(text((w) => w.strings([odd, '']))).toBe("['a\\tb\\nc\\\\d\\re\\0f\\'g é😀\\t','']");
    expect(text((w) => w.optStr(null).tab().optNum(undefined).tab().optNum(3))).toBe('\\N\t\\N\t3');
  });

  it('grows past its first buffer without losing bytes', () => {
    const rows = Array.from({ length: 500 }, (_, i) => `row-${i}-${'x'.repeat(i % 37)}`);
    const got = text((w) => {
      for (const r of rows) {
        w.str(r).tab().int(r.length);
        w.end();
      }
    }, 8);
    expect(got).toBe(rows.map((r) => `${r}\t${r.length}\n`).join(''));
  });
});
