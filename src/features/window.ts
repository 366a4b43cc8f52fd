// Sliding windows computed from tiles (fixed time buckets). This file holds the one boundary rule that the
// streaming, backfill and scoring paths share.
import { parseDuration } from './time.ts';

export interface Window {
  /** "1h", used in feature names. */
  readonly name: string;
  readonly lengthMs: number;
  /** Tile width: the window's precision. Smaller tiles are fresher and more precise, and cost more state. */
  readonly tileMs: number;
  /** lengthMs / tileMs */
  readonly tiles: number;
}

export function window(length: string, tile: string): Window {
  const lengthMs = parseDuration(length);
  const tileMs = parseDuration(tile);
  if (lengthMs % tileMs !== 0) throw new Error(`window ${length} is not a whole number of ${tile} tiles`);
  return { name: length, lengthMs, tileMs, tiles: lengthMs / tileMs };
}

/** The tile an event time falls in: tile i covers [i * tileMs, (i + 1) * tileMs). */
export function tileOf(time: number, tileMs: number): number {
  return Math.floor(time / tileMs);
}

/**
 * THE BOUNDARY RULE. A window's value at time t aggregates the `tiles` complete tiles that end at or before the
 * start of t's own tile: tile indices [tileOf(t) - tiles, tileOf(t) - 1], i.e. event times in
 *   [ (tileOf(t) - tiles) * tileMs,  tileOf(t) * tileMs ).
 * The tile that contains t is excluded, so nothing at or after t (not the impression's own click, not an event
 * that reached the log early) can leak into a value read at t; the price is freshness of up to one tile.
 * Returns the first tile index; the window covers `w.tiles` consecutive tiles from there.
 */
export function firstTile(t: number, w: Window): number {
  return tileOf(t, w.tileMs) - w.tiles;
}
