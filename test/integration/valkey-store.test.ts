// The Valkey store's held parts on a real Valkey: a batch whose held parts are let go by another partition's batch
// while its missing ones load still writes every entity, and the store answers as the in-process reference does.
import { Valkey } from 'iovalkey';
import { afterAll, describe, it } from 'vitest';
import { generate } from '../../src/events/generator.ts';
import type { AdClick, AdImpression } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { TileBatch } from '../../src/features/tile-batch.ts';
import { MemoryStore } from '../../src/online/memory-store.ts';
import { ValkeyStore } from '../../src/online/valkey-store.ts';
import { VALKEY_URL } from '../support/services.ts';
import { expectSameVectors } from '../support/streaming.ts';

const ns = `vs${Date.now()}.`;
const features = new FeatureSet(DEFAULT_GROUPS);
const client = new Valkey(VALKEY_URL, { enableAutoPipelining: true });

afterAll(async () => {
  const keys = await client.keys(`${ns}*`);
  for (let i = 0; i < keys.length; i += 1000) await client.unlink(...keys.slice(i, i + 1000));
  client.disconnect();
});

describe('Valkey store', () => {
  it('writes a batch whose held parts another partition let go of while it loaded', async () => {
    const log = generate({ seed: 5, days: 1, impressionsPerDay: 4000 });
    const events = log.flatMap(({ record }) =>
      record.kind === 'impression' || record.kind === 'click'
        ? [{ kind: record.kind, event: record.event as AdImpression | AdClick }]
        : [],
    );
    const batchOf = (from: number, to: number) => {
      const b = new TileBatch();
      for (const { kind, event } of events.slice(from, to)) features.apply(kind, event, b);
      return b;
    };
    const a1 = batchOf(0, 10);
    const c1 = batchOf(10, 2010);
    const a2 = batchOf(0, 11); // a1's entities, held, and one event's new ones, to load
    // Bound: a1's parts fit; c1's push it over, so c1's write lets go of the oldest (a1's).
    // a2's load is answered only once c1's batch is written: a slow reply, from Valkey, to the store's own script.
    let armed = false;
    let release = () => {};
    const c1Written = new Promise<void>((resolve) => {
      release = resolve;
    });
    type Loads = { tbLoadParts: (...args: unknown[]) => Promise<string> };
    const gated = new Proxy(client, {
      get(target, prop) {
        if (prop === 'tbLoadParts')
          return async (...args: unknown[]) => {
            const reply = await (target as unknown as Loads).tbLoadParts(...args);
            if (armed && args.includes('a/0')) await c1Written;
            return reply;
          };
        const value = Reflect.get(target, prop, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const store = new ValkeyStore(gated, {
      features,
      namespace: ns,
      ttlSeconds: 3600,
      retentionMs: features.retentionMs,
      heldParts: a1.entities.size + 10,
    });
    const reference = new MemoryStore(features);
    const both = (batch: TileBatch, source: string, end: number) => {
      reference.applyBatch(batch, source, end);
      return store.applyBatch(batch, source, end);
    };
    await both(a1, 'a/0', 1);
    armed = true;
    const second = both(a2, 'a/0', 2);
    await both(c1, 'c/0', 1);
    release();
    await second;

    const impressions = events.filter((e) => e.kind === 'impression').map((e) => e.event as AdImpression);
    await expectSameVectors(features, impressions, store, reference);
  });
});
