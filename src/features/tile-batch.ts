// Tile updates of one processed batch, merged per entity key, ready for a store to apply in one round trip.
import { getOrCreate } from '../util/map.ts';
import type { UpdateSink } from './update.ts';

export interface EntityUpdates {
  readonly incr: ReadonlyMap<string, number>;
  readonly max: ReadonlyMap<string, number>;
  readonly sets: ReadonlyMap<string, ReadonlySet<string>>;
}

/** An entity's updates of one kind before the first: one empty map all of them share (most have no max or set). */
const NONE = new Map<never, never>();
const none = <K, V>() => NONE as unknown as Map<K, V>;

interface Updates {
  incr: Map<string, number>;
  max: Map<string, number>;
  sets: Map<string, Set<string>>;
}

export class TileBatch implements UpdateSink {
  private readonly byKey = new Map<string, Updates>();

  /** Per entity key, its updates merged over the batch. */
  get entities(): ReadonlyMap<string, EntityUpdates> {
    return this.byKey;
  }

  private of(key: string): Updates {
    let u = this.byKey.get(key);
    if (u === undefined) {
      u = {
        incr: NONE as Map<string, number>,
        max: NONE as Map<string, number>,
        sets: NONE as Map<string, Set<string>>,
      };
      this.byKey.set(key, u);
    }
    return u;
  }

  incr(key: string, field: string, delta: number): void {
    const u = this.of(key);
    if (u.incr === none()) u.incr = new Map();
    u.incr.set(field, (u.incr.get(field) ?? 0) + delta);
  }

  max(key: string, field: string, value: number): void {
    const u = this.of(key);
    if (u.max === none()) u.max = new Map();
    const cur = u.max.get(field);
    if (cur === undefined || value > cur) u.max.set(field, value);
  }

  sadd(key: string, field: string, member: string): void {
    const u = this.of(key);
    if (u.sets === none()) u.sets = new Map();
    getOrCreate(u.sets, field, () => new Set<string>()).add(member);
  }
}
