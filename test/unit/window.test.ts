import { describe, expect, it } from 'vitest';
import { firstTile, tileOf, window } from '../../src/features/window.ts';

const at = (hh: number, mm: number, ss = 0, ms = 0) => Date.UTC(2026, 10, 2, hh, mm, ss, ms);

describe('the window boundary rule', () => {
  // A 1 h window on 5 min tiles, read at 10:07:30, covers event times [09:05:00, 10:05:00).
  const w = window('1h', '5m');
  const t = at(10, 7, 30);
  const inWindow = (eventTime: number) => {
    const tile = tileOf(eventTime, w.tileMs);
    return tile >= firstTile(t, w) && tile < firstTile(t, w) + w.tiles;
  };

  it('pins both edges: start inclusive, the read time tile excluded', () => {
    expect(inWindow(at(9, 5))).toBe(true);
    expect(inWindow(at(9, 4, 59, 999))).toBe(false);
    expect(inWindow(at(10, 4, 59, 999))).toBe(true);
    expect(inWindow(at(10, 5))).toBe(false);
    expect(inWindow(at(10, 7, 29, 999))).toBe(false); // before t, but in t's own tile: not yet complete
    expect(inWindow(t)).toBe(false);
  });

  it('a read exactly on a tile boundary sees the tile that just closed', () => {
    const edge = at(10, 5);
    expect(firstTile(edge, w) + w.tiles - 1).toBe(tileOf(at(10, 4, 59, 999), w.tileMs));
  });

  it('handles times before the epoch tile 0 consistently (floor, not truncation)', () => {
    expect(tileOf(-1, 60_000)).toBe(-1);
  });

  it('rejects a window that is not a whole number of tiles', () => {
    expect(() => window('1h', '7m')).toThrow(/whole number/);
    expect(window('7d', '1d')).toMatchObject({ name: '7d', tiles: 7 });
  });
});
