// The stream's state (online/part-writer.ts: the engine's rings per source partition, written as parts) against one
// in-process store of every event: events split over several source partitions, each written in batches through
// its own rings, restarted from what was written, and pruned at a horizon, answer every read at or after the
// horizon as the store that saw each event once does.
import { describe, expect, it } from 'vitest';
import { generate } from '../../src/events/generator.ts';
import type { AdClick, AdImpression } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import type { Source } from '../../src/features/define.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { type PartStore, PartWriter } from '../../src/online/part-writer.ts';
import { type Part, PartLayout } from '../../src/online/parts.ts';
import { ReferenceStore } from '../support/reference.ts';

const features = new FeatureSet(DEFAULT_GROUPS);
const layout = new PartLayout(features);

/** Parts as Valkey keeps them: JSON per (entity, source partition), a part replaced only by a later batch's. */
class JsonParts implements PartStore {
  readonly stored = new Map<string, Map<string, string>>();
  loadParts(keys: readonly string[], source: string): Promise<(Part | null)[]> {
    return Promise.resolve(keys.map((k) => JSON.parse(this.stored.get(k)?.get(source) ?? 'null') as Part | null));
  }
  writeParts(keys: readonly string[], parts: readonly string[], source: string, endOffset: number): Promise<void> {
    keys.forEach((key, i) => {
      const held = this.stored.get(key) ?? new Map<string, string>();
      this.stored.set(key, held);
      const before = held.get(source);
      if (before === undefined || (JSON.parse(before) as Part).o < endOffset) held.set(source, parts[i] as string);
    });
    return Promise.resolve();
  }
}

describe('parts', () => {
  it('answer reads at or after the horizon as one store of every event does, across partitions, batches, restarts and prunes', async () => {
    const log = generate({ seed: 5, days: 3, impressionsPerDay: 3000 });
    const events = log
      .filter((r) => r.record.kind === 'impression' || r.record.kind === 'click')
      .map((r) => ({ kind: r.record.kind as Source, e: r.record.event as AdImpression | AdClick }));
    const reference = new ReferenceStore(features);
    for (const { kind, e } of events) reference.apply(kind, e);
    const PARTITIONS = 3;
    const BATCH = 500;
    const end = Math.max(...events.map((x) => x.e.event_time));
    const horizon = end - 6 * 3600_000;
    // Three partitions of each source, written batch by batch; the writer restarts now and then (its state read
    // back from the parts), and the batches past the middle prune at the horizon (as the slowest watermark moves).
    const write = async (prune: boolean) => {
      const store = new JsonParts();
      let writer = new PartWriter(features, store);
      for (const source of ['impression', 'click'] as const)
        for (let p = 0; p < PARTITIONS; p++) {
          const mine = events.filter((x, i) => x.kind === source && i % PARTITIONS === p).map((x) => x.e);
          for (let b = 0; b < mine.length; b += BATCH) {
            if (b % (3 * BATCH) === BATCH) writer = new PartWriter(features, store);
            const before = prune && b > mine.length / 2 ? horizon : 0;
            await writer.apply({ source, events: mine.slice(b, b + BATCH) }, `${source}/${p}`, b, before);
          }
        }
      return store.stored;
    };
    const stored = await write(true);

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
    const tiles = (stored: Map<string, Map<string, string>>) =>
      [...stored.values()]
        .flatMap((m) => [...m.values()])
        .reduce((n, json) => n + Object.values((JSON.parse(json) as Part).n).flat().length, 0);
    expect(tiles(stored)).toBeLessThan(tiles(await write(false)) * 0.8);
  });
});
