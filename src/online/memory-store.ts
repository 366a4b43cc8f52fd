// The in-process online store: the embedded default, and the backfill's replay state. Same updates and reads
// as the Valkey store, held in Maps.
import type { FeatureReader, ReadRequest, ReadResult, UpdateSink } from '../features/compile.ts';
import { getOrCreate } from '../util/map.ts';

export class MemoryStore implements UpdateSink, FeatureReader {
  private readonly hashes = new Map<string, Map<string, number>>();
  private readonly sets = new Map<string, Map<string, Set<string>>>();

  incr(key: string, field: string, delta: number): void {
    const h = getOrCreate(this.hashes, key, () => new Map<string, number>());
    h.set(field, (h.get(field) ?? 0) + delta);
  }

  max(key: string, field: string, value: number): void {
    const h = getOrCreate(this.hashes, key, () => new Map<string, number>());
    const cur = h.get(field);
    if (cur === undefined || value > cur) h.set(field, value);
  }

  sadd(key: string, field: string, member: string): void {
    const byField = getOrCreate(this.sets, key, () => new Map<string, Set<string>>());
    getOrCreate(byField, field, () => new Set<string>()).add(member);
  }

  readSync(requests: readonly ReadRequest[]): ReadResult[] {
    return requests.map((r) => {
      const h = this.hashes.get(r.key);
      const s = this.sets.get(r.key);
      return {
        values: r.fields.map((f) => h?.get(f) ?? null),
        setCounts: r.sets.map((fields) => {
          if (!s) return 0;
          const union = new Set<string>();
          for (const f of fields) for (const m of s.get(f) ?? []) union.add(m);
          return union.size;
        }),
      };
    });
  }

  read(requests: readonly ReadRequest[]): Promise<ReadResult[]> {
    return Promise.resolve(this.readSync(requests));
  }

  /** Drops tiles that no window can read once every read time is at or after `before` + retention. */
  prune(tileStartBefore: (field: string) => boolean): void {
    for (const h of this.hashes.values()) for (const f of h.keys()) if (tileStartBefore(f)) h.delete(f);
    for (const byField of this.sets.values()) for (const f of byField.keys()) if (tileStartBefore(f)) byField.delete(f);
  }
}
