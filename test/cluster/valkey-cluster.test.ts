// The stream and the store's reads on a real Valkey Cluster (three masters with a replica each, started by
// scripts/services/valkey-cluster.sh): `--valkey` naming one node gives a Cluster client, the online state spreads
// over every master's slots, and what a read of it assembles equals an in-process replay of the same topics; serve's
// scoring stack on the cluster ranks as the same model over the replay's state.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Cluster } from 'iovalkey';
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
import { expectRanksAsReplay } from '../support/cluster-rankings.ts';
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
import { dropKeys, keysByMaster } from '../support/valkey-cluster.ts';

const ns = `vc${Date.now()}.`;
const kafka = createKafka(KAFKA_BROKERS);
const features = new FeatureSet(DEFAULT_GROUPS);
let cluster: Cluster | undefined;

afterAll(async () => {
  if (!cluster) return;
  await dropKeys(cluster, `${ns}*`);
  cluster.disconnect();
});

describe('tributary stream on a Valkey Cluster', () => {
  it('connects through any node, spreads the state over every master, and reads it back as the replay has it', {
    timeout: 240_000,
  }, async () => {
    const client = await connectValkey(VALKEY_CLUSTER_URL, { enableAutoPipelining: true, maxRetriesPerRequest: 2 });
    expect(client.isCluster).toBe(true);
    cluster = client as Cluster;
    expect(cluster.nodes('master')).toHaveLength(3);

    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    const { log, sent } = await publishScenario(kafka, serde, ns, {
      seed: 33,
      days: 1,
      impressionsPerDay: 3000,
      lateShare: 0.03,
      duplicateShare: 0.03,
    });
    const { service, online } = testStream(kafka, cluster, features, ns, { maxBatch: 700 });
    await service.start();
    await until('the stream to process every message', () => service.processed >= sent, 40_000);
    await service.stop();
    expect(service.processed).toBe(sent);
    // Every write and load went to its master in calls of many hashes, none one by one.
    expect(online.perHashCalls).toBe(0);

    // Entity hashes and checkpoints on every master, none of them holding most of the state.
    const byMaster = await keysByMaster(cluster, `${ns}*`);
    const total = byMaster.reduce((n, keys) => n + keys.length, 0);
    expect(total).toBeGreaterThan(1000);
    for (const keys of byMaster) expect(keys.length).toBeGreaterThan(total / 6);

    const ref = await referenceState(await readPartitions(kafka, ns, sent), ns, features, serde);
    const contexts = log.filter((r) => r.record.kind === 'impression').map((r) => r.record.event as AdImpression);
    await expectSameVectors(features, contexts, online, ref.store);

    // `tributary serve`'s scoring stack on the cluster (its read cache off there) ranks exactly as the same model over
    // the replay's state.
    const registry = new ModelRegistry(mkdtempSync(join(tmpdir(), 'vc-models-')));
    await registry.promote(await trainAndRegister(registry, features, replayRecords(log), 1));
    const config = loadConfig(
      { valkey: VALKEY_CLUSTER_URL, namespace: ns, modelsDir: registry.dir, rankTimeoutMs: 5000 },
      {},
    );
    const scoring = await openScoring(config);
    try {
      // Rankings answer on defaults until scoring's connections are up (it never waits for one).
      const nodes = () => (scoring.valkey as Cluster).nodes('master');
      await until(
        'scoring to reach every master',
        () => nodes().length === 3 && nodes().every((n) => n.status === 'ready'),
      );
      const time = Math.max(...contexts.map((c) => c.event_time)) + 60_000;
      await expectRanksAsReplay(scoring.ranker, scoring.models, features, ref.store, contexts, time);
    } finally {
      await scoring.close();
    }
  });
});
