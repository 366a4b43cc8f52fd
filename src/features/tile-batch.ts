// Tile updates of one processed batch, merged per entity key, ready for a store to apply in one round trip.
import { getOrCreate } from '../util/map.ts';
import type { UpdateSink } from './update.ts';

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
