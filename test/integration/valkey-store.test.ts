// The stream's state in Valkey (part-writer.ts over the Valkey store) on a real server: several source partitions,
// each's rings started over at a small bound (its entities read back from Valkey again and again), a batch retried
// by the same process and replayed by a restarted one (both must sit it out where Valkey holds it already): the
// readable state equals that of one in-process store that saw each event once.
import { Valkey } from 'iovalkey';
import { afterAll, describe, expect, it } from 'vitest';
import { generate } from '../../src/events/generator.ts';
import type { AdClick, AdImpression } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { ValkeyStore } from '../../src/online/valkey-store.ts';
import { ReferenceStore } from '../support/reference.ts';
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
  it('answers as one store of every event after bounded state, retries and a restart replaying a batch', async () => {
    const log = generate({ seed: 5, days: 1, impressionsPerDay: 4000 });
    const events = log.flatMap(({ record }) =>
      record.kind === 'impression' || record.kind === 'click'
        ? [{ kind: record.kind, event: record.event as AdImpression | AdClick }]
        : [],
    );
    const reference = new ReferenceStore(features);
    for (const { kind, event } of events) reference.apply(kind, event);

    // First half: the rings start over after almost every batch; second half: they hold everything.
    const options = (bounded: boolean) => ({
      features,
      namespace: ns,
      ttlSeconds: 3600,
      retentionMs: features.retentionMs,
      heldEntities: bounded ? 300 : 1_000_000,
    });
    let store = new ValkeyStore(client, options(true));
    // Two impression partitions and one of clicks, in batches of 250, interleaved.
    const partitions = [
      { source: 'impression' as const, name: 'imp/0', events: [] as (AdImpression | AdClick)[] },
      { source: 'impression' as const, name: 'imp/1', events: [] as (AdImpression | AdClick)[] },
      { source: 'click' as const, name: 'clk/0', events: [] as (AdImpression | AdClick)[] },
    ];
    let n = 0;
    for (const { kind, event } of events) (kind === 'click' ? partitions[2] : partitions[n++ % 2])?.events.push(event);
    const BATCH = 250;
    const batches = Math.max(...partitions.map((p) => Math.ceil(p.events.length / BATCH)));
    for (let b = 0; b < batches; b++) {
      if (b === Math.floor(batches / 2)) store = new ValkeyStore(client, options(false));
      for (const p of partitions) {
        const batch = { source: p.source, events: p.events.slice(b * BATCH, (b + 1) * BATCH) };
        if (batch.events.length === 0) continue;
        const end = b * BATCH + batch.events.length - 1;
        await store.applyBatch(batch, p.name, end);
        if (b % 5 === 1) await store.applyBatch(batch, p.name, end); // retried by this process
        if (b % 7 === 3) {
          store = new ValkeyStore(client, options(b < batches / 2)); // a restart replays its batch in flight
          await store.applyBatch(batch, p.name, end);
        }
      }
    }
    // Each partition wrote its own part of an ad seen on all three.
    const hashes = await client.keys(`${ns}tb:{ad:*`);
    const fields = await Promise.all(hashes.map((h) => client.hkeys(h)));
    expect(fields.some((f) => f.filter((x) => !x.startsWith('@')).length === 3)).toBe(true);

    const impressions = events.filter((e) => e.kind === 'impression').map((e) => e.event as AdImpression);
    await expectSameVectors(features, impressions, store, reference);
  });
});
