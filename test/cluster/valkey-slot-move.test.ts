// Slots move between the Valkey Cluster's masters while the stream writes and rankings read: the checkpoints' slots
// and a fifteenth of all others, keys and all, each to the next master. Nothing is lost or doubled (the state read
// back equals an in-process replay), no ranking fails (defaults while a slot moves are allowed and counted), and
// afterwards serve's stack, read cache on, ranks as the same model over the replay's state.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster } from 'iovalkey';
import { afterAll, describe, expect, it } from 'vitest';
import { openScoring } from '../../src/cli/scoring-run.ts';
import { loadConfig } from '../../src/config/config.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AdImpression, EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { ModelRegistry } from '../../src/model/registry.ts';
import { connectValkey } from '../../src/online/connect.ts';
import { ValkeyStore } from '../../src/online/valkey-store.ts';
import { sourceTopics } from '../../src/streams/processor.ts';
import { expectRanksAsReplay, rankAlong } from '../support/cluster-rankings.ts';
import { replayRecords, trainAndRegister } from '../support/models.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_CLUSTER_URL } from '../support/services.ts';
import {
  expectSameVectors,
  publishScenario,
  readPartitions,
  referenceState,
  testStream,
  until,
} from '../support/streaming.ts';
import { dropKeys, moveSlots } from '../support/valkey-cluster.ts';

const ns = `vm${Date.now()}.`;
const kafka = createKafka(KAFKA_BROKERS);
const features = new FeatureSet(DEFAULT_GROUPS);
let cluster: Cluster | undefined;

afterAll(async () => {
  if (!cluster) return;
  await dropKeys(cluster, `${ns}*`);
  cluster.disconnect();
});

describe('slots moving on a Valkey Cluster', () => {
  it('lose and double nothing of the stream, and fail no ranking', { timeout: 300_000 }, async () => {
    cluster = (await connectValkey(VALKEY_CLUSTER_URL, { enableAutoPipelining: true })) as Cluster;
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    const scenario = { seed: 44, days: 2, impressionsPerDay: 3000, lateShare: 0.03, duplicateShare: 0.03 };
    const { log, sent, publishRest } = await publishScenario(kafka, serde, ns, scenario, { holdBack: 0.5 });
    const contexts = log.filter((r) => r.record.kind === 'impression').map((r) => r.record.event as AdImpression);
    const registry = new ModelRegistry(mkdtempSync(join(tmpdir(), 'vm-models-')));
    await registry.promote(await trainAndRegister(registry, features, replayRecords(log), 1));
    const config = loadConfig(
      { valkey: VALKEY_CLUSTER_URL, namespace: ns, modelsDir: registry.dir, rankTimeoutMs: 1000 },
      {},
    );
    const scoring = await openScoring(config);
    const { service, online } = testStream(kafka, cluster, features, ns, { maxBatch: 150 });
    try {
      // Rankings all along, at the log's end: each answers (features or flagged defaults), none throws.
      const time = Math.max(...contexts.map((c) => c.event_time)) + 60_000;
      const rankings = rankAlong(scoring.ranker, contexts, time);

      await service.start();
      await until('the stream to write state', () => service.processed > 500, 30_000);
      // The checkpoints' slots (the group's sequence and every partition's), and every fifteenth slot.
      const group = `${ns}stream`;
      const checkpointKeys = [`tb:{seq|${group}}`];
      for (const topic of Object.values(sourceTopics(ns)))
        for (let p = 0; p < 3; p++) checkpointKeys.push(`tb:{ckpt|${group}|${topic}/${p}}`);
      const slots = new Set<number>();
      for (const key of checkpointKeys) slots.add(Number(await cluster.call('CLUSTER', 'KEYSLOT', key)));
      for (let s = 0; s < 16384; s += 15) slots.add(s);
      const during = { from: service.processed, to: 0 };
      const keysMoved = await moveSlots(cluster, slots);
      during.to = service.processed;
      await publishRest();
      await until('the stream to process every message', () => service.processed >= sent, 120_000);
      const ranked = await rankings.stop();
      await service.stop();
      console.log(
        `slot move: ${slots.size} slots, ${keysMoved} keys moved while the stream went from ${during.from} to ` +
          `${during.to} of ${sent} events (${online.perHashCalls} hashes written or loaded one per call); rankings ${ranked.ok} with features, ${ranked.defaulted} on defaults`,
      );
      expect(keysMoved).toBeGreaterThan(100);
      // Whether a call met a master that had just lost a slot depends on timing here (the client's slot map is
      // refreshed on any MOVED, the checkpoints' too): the fallback itself is the next test's.
      expect(during.to, 'the stream wrote while slots moved').toBeGreaterThan(during.from);
      expect(ranked.failed).toEqual([]);
      expect(ranked.ok).toBeGreaterThan(0);
      expect(service.processed).toBe(sent);

      const ref = await referenceState(await readPartitions(kafka, ns, sent), ns, features, serde);
      await expectSameVectors(features, contexts, online, ref.store);
      await expectRanksAsReplay(scoring.ranker, scoring.models, features, ref.store, contexts, time);
    } finally {
      await service.stop().catch(() => {});
      await scoring.close();
    }
  });

  it('sends a call that meets a master no longer holding a slot again hash by hash, through the Cluster client', async () => {
    // The store's client keeps its slot map (no periodic refresh); the slots move through another connection.
    const { hostname, port } = new URL(VALKEY_CLUSTER_URL);
    const stale = new Cluster([{ host: hostname, port: Number(port) }], { slotsRefreshInterval: 3_600_000 });
    const mover = (await connectValkey(VALKEY_CLUSTER_URL, {})) as Cluster;
    try {
      const store = new ValkeyStore(stale, { features, namespace: `${ns}fallback.`, ttlSeconds: 3600, retentionMs: 0 });
      const keys = Array.from({ length: 20 }, (_, i) => `ad:fallback-${i}`);
      expect(await store.loadParts(keys, 'src')).toEqual(keys.map(() => null));
      expect(store.perHashCalls).toBe(0);
      const slots = new Set<number>();
      for (const k of keys) slots.add(Number(await mover.call('CLUSTER', 'KEYSLOT', store.entityHash(k))));
      await moveSlots(mover, slots);
      // The masters the client still names refuse the keys they no longer hold: every hash goes again on its own,
      // and the Cluster client follows MOVED to the new owners.
      expect(await store.loadParts(keys, 'src')).toEqual(keys.map(() => null));
      expect(store.perHashCalls).toBe(keys.length);
    } finally {
      stale.disconnect();
      mover.disconnect();
    }
  });
});
