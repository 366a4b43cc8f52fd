// Tile updates of one processed batch, per entity key, ready for a store to apply in one round trip.
import type { Series } from './compile.ts';
import type { UpdateSink } from './update.ts';

/**
 * One entity's updates of a batch in arrival order, flat: (series, tile, value) triples. Not merged here: a part folds
 * them as cheaply as a map would, without an object per field.
 */
export type EntityUpdates = readonly (Series | number | string)[];

export class TileBatch implements UpdateSink {
  private readonly byKey = new Map<string, (Series | number | string)[]>();

  /** Per entity key, its updates of the batch. */
  get entities(): ReadonlyMap<string, EntityUpdates> {
    return this.byKey;
  }

  /** The last entity updated: an event updates each of its entities' series one after another. */
  private lastKey = '';
  private last: (Series | number | string)[] = [];

  update(key: string, series: Series, tile: number, value: number | string): void {
    if (key !== this.lastKey) {
      let u = this.byKey.get(key);
      if (u === undefined) {
        u = [];
        this.byKey.set(key, u);
      }
      this.lastKey = key;
      this.last = u;
    }
    this.last.push(series, tile, value);
  }
}
