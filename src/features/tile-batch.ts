// Tile updates of one processed batch, merged per entity key, ready for a store to apply in one round trip.
import { getOrCreate } from '../util/map.ts';
import type { UpdateSink } from './compile.ts';

export interface EntityUpdates {
  readonly incr: Map<string, number>;
  readonly max: Map<string, number>;
  readonly sets: Map<string, Set<string>>;
}

export class TileBatch implements UpdateSink {
  readonly entities = new Map<string, EntityUpdates>();

  private of(key: string): EntityUpdates {
    return getOrCreate(this.entities, key, () => ({ incr: new Map(), max: new Map(), sets: new Map() }));
  }

  incr(key: string, field: string, delta: number): void {
    const m = this.of(key).incr;
    m.set(field, (m.get(field) ?? 0) + delta);
  }

  max(key: string, field: string, value: number): void {
    const m = this.of(key).max;
    const cur = m.get(field);
    if (cur === undefined || value > cur) m.set(field, value);
  }

  sadd(key: string, field: string, member: string): void {
    getOrCreate(this.of(key).sets, field, () => new Set<string>()).add(member);
  }
}

/** The online store's write side: applies a batch once per (entity, source partition, batch end offset). */
export interface TileWriter {
  /**
   * Idempotent: each entity remembers the last batch end offset applied from `source` (a topic/partition) and
   * ignores a batch that does not go beyond it, so a batch replayed after a crash is not counted twice.
   * `horizon`: the event time below which no source partition writes any more (the group's slowest watermark);
   * the store may drop tiles older than it by more than any read within the retention can ask for.
   */
  applyBatch(batch: TileBatch, source: string, endOffset: number, horizon?: number): Promise<void>;
}
