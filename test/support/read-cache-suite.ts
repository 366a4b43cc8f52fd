// The scoring read cache on a real Valkey, a single node or a Cluster (CLIENT TRACKING in broadcast mode, on every
// node): cached reads equal direct reads; a write into a window being read (a late event) reaches cached readers
// through Valkey's invalidation; after an invalidation connection is killed and reconnects, the cache starts over
// and stays correct.
import { type Cluster, type Redis, Valkey } from 'iovalkey';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { generate } from '../../src/events/generator.ts';
import type { AdImpression } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import type { ReadResult } from '../../src/features/read-plan.ts';
import { connectValkey } from '../../src/online/connect.ts';
import { applyLog } from '../../src/online/part-writer.ts';
import { sharedEntityCache } from '../../src/online/read-cache.ts';
import { ValkeyStore } from '../../src/online/valkey-store.ts';
import { until } from './streaming.ts';

export async function readCacheSuite(name: string, url: string): Promise<void> {
  const ns = `rc${Date.now()}.`;
  const features = new FeatureSet(DEFAULT_GROUPS);
  const options = { features, namespace: ns, ttlSeconds: 3600, retentionMs: features.retentionMs };
  const connect = () => connectValkey(url, { enableAutoPipelining: true });
  const [writer, reader, direct, other] = await Promise.all([connect(), connect(), connect(), connect()]);
  const cache = sharedEntityCache(features, reader, pino({ level: 'silent' }));
  const store = new ValkeyStore(writer, options);
  const cached = new ValkeyStore(reader, { ...options, cache });
  const uncached = new ValkeyStore(direct, options);
  const nodes = (c: Redis | Cluster) => (c.isCluster ? (c as Cluster).nodes('master') : [c as Redis]);

  afterAll(async () => {
    cache.tracked.close();
    for (const node of nodes(writer)) {
      const keys = await node.keys(`${ns}*`);
      for (const key of keys) await node.unlink(key);
    }
    for (const c of [writer, reader, direct, other]) c.disconnect();
  });

  describe(`tracked read cache (${name})`, () => {
    it('answers as Valkey does, before and after writes into read windows and a reconnect', {
      timeout: 60_000,
    }, async () => {
      const log = generate({ seed: 21, days: 1, impressionsPerDay: 6000 });
      const impressions = log.filter((r) => r.record.kind === 'impression').map((r) => r.record.event as AdImpression);
      const end = Math.max(...impressions.map((i) => i.event_time));
      let batch = 0;
      await applyLog(store, log, 'test', end, ++batch);
      await until('tracking to be on', () => cache.tracked.active, 5_000);

      // Rankings at t: a user and 40 candidate ads each; several share candidates, so the cache gets hits.
      const t = end + 90_000;
      const plans = Array.from({ length: 12 }, (_, k) => {
        const at = impressions[(k * 977) % impressions.length] as AdImpression;
        const ads = Array.from(
          { length: 40 },
          (_, j) => impressions[(j * 131 + (k % 3)) % impressions.length] as AdImpression,
        );
        return features.plan(
          ads.map((a) => ({ ...a, user_id: at.user_id, publisher_id: at.publisher_id })),
          t,
        );
      });
      // Values and set counts (a cached answer is also marked shared).
      const answers = (rs: ReadResult[]) => JSON.stringify(rs.map((r) => [r.values, r.setCounts]));
      const same = async () => {
        for (const p of plans)
          if (answers(await cached.read(p.requests)) !== answers(await uncached.read(p.requests))) return false;
        return true;
      };
      expect(await same()).toBe(true);
      const hits = cache.tracked.stats.hits;
      expect(await same()).toBe(true);
      expect(cache.tracked.stats.hits).toBeGreaterThan(hits); // the second pass is (partly) answered in process

      // A late impression of a candidate ad, in the minute before t: its 5-minute window as read at t changes.
      const ad = plans[0]?.requests.find((r) => r.key.startsWith('ad:'))?.key as string;
      const adIndex = features.names.indexOf('ad__impressions_5m');
      const vectorOf = async () =>
        features.assemble(plans[0]!, await cached.read(plans[0]!.requests))[
          (plans[0]!.refs.findIndex((r) => plans[0]!.requests[r]?.key === ad) / features.groups.length) | 0
        ]![adIndex]!;
      const late = (n: number) => {
        const template = impressions.find((i) => `ad:${i.ad_id}` === ad) as AdImpression;
        const events = [{ ...template, event_id: `late-${n}`, event_time: t - 60_000 }];
        return store.applyBatch({ source: 'impression', events }, 'test/impression', ++batch, end);
      };
      const before = await vectorOf();
      const invalidations = cache.tracked.stats.invalidations;
      await late(1);
      await until('the cached read to see the late impression', async () => (await vectorOf()) === before + 1, 5_000);
      expect(cache.tracked.stats.invalidations).toBeGreaterThan(invalidations);
      expect(await same()).toBe(true);

      // The invalidation connection dies: tracking is lost with it; the cache starts over once it is back.
      const resets = cache.tracked.stats.resets;
      const tracker = cache.tracked.connections[0] as Redis;
      const node = new Valkey({ host: tracker.options.host, port: tracker.options.port });
      const local = (tracker as unknown as { stream: { localPort: number } }).stream.localPort;
      await node.call('CLIENT', 'KILL', 'ADDR', `127.0.0.1:${local}`);
      node.disconnect();
      await until(
        'the tracker to reconnect and track again',
        () => cache.tracked.stats.resets > resets && cache.tracked.active,
        10_000,
      );
      await same(); // fill the cache anew
      await late(2);
      await until(
        'the cached read to see the second late impression',
        async () => (await vectorOf()) === before + 2,
        5_000,
      );
      expect(await same()).toBe(true);

      // Plans hold the answers a cache gave them (no lookup next time): once that cache is closed, another cache's
      // store reading the same plans after a write answers what Valkey holds, not what the closed one kept.
      const otherCache = sharedEntityCache(features, other, pino({ level: 'silent' }));
      const otherStore = new ValkeyStore(other, { ...options, cache: otherCache });
      try {
        await until('the other cache to track', () => otherCache.tracked.active, 5_000);
        cache.tracked.close();
        await late(3);
        for (const p of plans)
          expect(answers(await otherStore.read(p.requests))).toBe(answers(await uncached.read(p.requests)));
        expect(otherCache.tracked.stats.misses).toBeGreaterThan(0);
      } finally {
        otherCache.tracked.close();
      }
    });
  });
}
