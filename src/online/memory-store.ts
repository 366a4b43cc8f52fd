// The in-process online store: the embedded default, and the backfill's reference replay state. Same updates,
// layout and reads as the Valkey store, held in Maps.
import type { FeatureSet } from '../features/compile.ts';
import type { ReadRequest, ReadResult } from '../features/read-plan.ts';
import type { TileBatch } from '../features/tile-batch.ts';
import type { UpdateSink } from '../features/update.ts';
import { getOrCreate } from '../util/map.ts';
import type { FeatureReader, RawTiles, TileWriter } from './contract.ts';

export class MemoryStore implements UpdateSink, FeatureReader, TileWriter {
  /** Last batch end offset applied per entity and source, as the Valkey store keeps it. */
  private readonly applied = new Map<string, number>();
  private readonly hashes = new Map<string, Map<string, number>>();
  private readonly sets = new Map<string, Map<string, Set<string>>>();

  constructor(private readonly features: FeatureSet) {}

  incr(key: string, field: string, delta: number): void {
    const h = getOrCreate(this.hashes, key, () => new Map<string, number>());
    this.features.layout.forEachStoredRun(key, field, (prefix, first, count) => {
      for (let r = first; r < first + count; r++) h.set(prefix + r, (h.get(prefix + r) ?? 0) + delta);
    });
  }

  max(key: string, field: string, value: number): void {
    const h = getOrCreate(this.hashes, key, () => new Map<string, number>());
    this.features.layout.forEachStoredRun(key, field, (prefix, first, count) => {
      for (let r = first; r < first + count; r++) {
        const cur = h.get(prefix + r);
        if (cur === undefined || value > cur) h.set(prefix + r, value);
      }
    });
  }

  sadd(key: string, field: string, member: string): void {
    const byField = getOrCreate(this.sets, key, () => new Map<string, Set<string>>());
    getOrCreate(byField, field, () => new Set<string>()).add(member);
  }

  /** Sets a stored field to a value (loading a snapshot of another store). */
  load(key: string, field: string, value: number): void {
    getOrCreate(this.hashes, key, () => new Map<string, number>()).set(field, value);
  }

  applyBatch(batch: TileBatch, source: string, endOffset: number): Promise<void> {
    for (const [key, u] of batch.entities) {
      const marker = `${key}@${source}`;
      if ((this.applied.get(marker) ?? -1) >= endOffset) continue;
      // Merged per stored field, as the Valkey store writes a batch.
      const h = getOrCreate(this.hashes, key, () => new Map<string, number>());
      this.features.layout.forEachStoredSegment(key, u.incr, 'add', (prefix, first, count, value) => {
        for (let r = first; r < first + count; r++) h.set(prefix + r, (h.get(prefix + r) ?? 0) + value);
      });
      this.features.layout.forEachStoredSegment(key, u.max, 'max', (prefix, first, count, value) => {
        for (let r = first; r < first + count; r++) h.set(prefix + r, Math.max(value, h.get(prefix + r) ?? value));
      });
      for (const [f, members] of u.sets) for (const m of members) this.sadd(key, f, m);
      this.applied.set(marker, endOffset);
    }
    return Promise.resolve();
  }

  /** Nothing to read again: this store is the only copy. */
  forget(): void {}

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

  /** The stored fields themselves, as ValkeyStore.readRaw returns them (for served-vector recording). */
  readRaw(requests: readonly ReadRequest[]): Promise<RawTiles[]> {
    return Promise.resolve(
      requests.map((r) => {
        const h = this.hashes.get(r.key);
        const s = this.sets.get(r.key);
        return {
          key: r.key,
          fields: r.fields.map((f) => [f, h?.get(f) ?? null] as const),
          sets: [...new Set(r.sets.flat())].map((f) => [f, [...(s?.get(f) ?? [])]] as const),
        };
      }),
    );
  }

  read(requests: readonly ReadRequest[]): Promise<ReadResult[]> {
    return Promise.resolve(this.readSync(requests));
  }
}
