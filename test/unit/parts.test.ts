// The parts layout's pure core (src/online/parts.ts) against the in-process store: events split over several
// source partitions, each applied to its own parts in batches, pruned at a horizon, answer every read at or after
// the horizon as one store holding them all does.
import { describe, expect, it } from 'vitest';
import { generate } from '../../src/events/generator.ts';
import type { AdClick, AdImpression } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { TileBatch } from '../../src/features/tile-batch.ts';
import { MemoryStore } from '../../src/online/memory-store.ts';
import { emptyPart, type Part, PartLayout } from '../../src/online/parts.ts';

const features = new FeatureSet(DEFAULT_GROUPS);
const layout = new PartLayout(features);

describe('parts', () => {
  it('answer reads at or after the horizon as one store of every event does, across partitions, batches and prunes', () => {
    const log = generate({ seed: 5, days: 3, impressionsPerDay: 3000 });
    const events = log
      .filter((r) => r.record.kind === 'impression' || r.record.kind === 'click')
      .map((r) => ({ kind: r.record.kind as 'impression' | 'click', e: r.record.event as AdImpression | AdClick }));
    const reference = new MemoryStore(features);
    const PARTITIONS = 3;
    const BATCH = 500;
    const end = Math.max(...events.map((x) => x.e.event_time));
    const horizon = end - 6 * 3600_000;
    // Three partitions, each's parts written batch by batch (JSON round trip, as Valkey keeps them), pruned at the
    // horizon once the batches have passed it (as the stream's slowest watermark moves).
    const write = (prune: boolean) => {
      const stored = new Map<string, Map<number, string>>();
      for (let p = 0; p < PARTITIONS; p++) {
        const mine = events.filter((_, i) => i % PARTITIONS === p);
        for (let b = 0; b < mine.length; b += BATCH) {
          const batch = new TileBatch();
          for (const { kind, e } of mine.slice(b, b + BATCH)) features.apply(kind, e, batch);
          for (const [key, u] of batch.entities) {
            const byPartition = stored.get(key) ?? new Map<number, string>();
            stored.set(key, byPartition);
            const held = byPartition.get(p);
            const part: Part = held ? JSON.parse(held) : emptyPart();
            layout.apply(part, u);
            part.o = b;
            if (prune && b > mine.length / 2) layout.prune(key, part, horizon);
            byPartition.set(p, JSON.stringify(part));
          }
        }
      }
      return stored;
    };
    const stored = write(true);
    for (const { kind, e } of events) features.apply(kind, e, reference);

    const contexts = events.filter((x) => x.kind === 'impression').map((x) => x.e as AdImpression);
    let checked = 0;
    for (const t of [horizon, horizon + 61_000, end - 3600_000 + 17, end + 1, end + 3 * 86_400_000]) {
      const plan = features.plan(contexts.slice(0, 400), t);
      const parts = plan.requests.map((r) =>
        [...(stored.get(r.key)?.values() ?? [])].map((json) => JSON.parse(json) as Part),
      );
      const got = features.assemble(
        plan,
        plan.requests.map((r, i) => layout.answer(r, parts[i] as Part[])),
      );
      const want = features.assemble(plan, reference.readSync(plan.requests));
      expect(got).toEqual(want);
      checked += got.length;
    }
    expect(checked).toBe(2000);
    // Pruning dropped most one-minute and five-minute tiles, or the test proves nothing about it.
    const tiles = (stored: Map<string, Map<number, string>>) =>
      [...stored.values()]
        .flatMap((m) => [...m.values()])
        .reduce((n, json) => n + Object.values((JSON.parse(json) as Part).n).flat().length, 0);
    expect(tiles(stored)).toBeLessThan(tiles(write(false)) * 0.8);
  });
});
