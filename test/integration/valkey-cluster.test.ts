// The stream and the store's reads on a real Valkey Cluster (three masters with a replica each, started by
// scripts/services/valkey-cluster.sh): `--valkey` naming one node gives a Cluster client, the online state spreads
// over every master's slots, and what a read of it assembles equals an in-process replay of the same topics.
import type { Cluster } from 'iovalkey';
import { afterAll, describe, expect, it } from 'vitest';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AdImpression, EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { connectValkey } from '../../src/online/connect.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_CLUSTER_URL } from '../support/services.ts';
import {
  expectSameVectors,
  publishScenario,
  readPartitions,
  referenceState,
  testStream,
  until,
} from '../support/streaming.ts';

const ns = `vc${Date.now()}.`;
const kafka = createKafka(KAFKA_BROKERS);
const features = new FeatureSet(DEFAULT_GROUPS);
let cluster: Cluster | undefined;

/** The namespace's keys on each master. */
async function keysByMaster(c: Cluster): Promise<string[][]> {
  return Promise.all(
    c.nodes('master').map(async (node) => {
      const keys: string[] = [];
      let cursor = '0';
      do {
        const [next, batch] = await node.scan(cursor, 'MATCH', `${ns}*`, 'COUNT', 1000);
        keys.push(...batch);
        cursor = next;
      } while (cursor !== '0');
      return keys;
    }),
  );
}

afterAll(async () => {
  if (!cluster) return;
  const byMaster = await keysByMaster(cluster);
  await Promise.all(
    cluster.nodes('master').map(async (node, i) => {
      for (const key of byMaster[i] ?? []) await node.unlink(key);
    }),
  );
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

    // Entity hashes and checkpoints on every master, none of them holding most of the state.
    const byMaster = await keysByMaster(cluster);
    const total = byMaster.reduce((n, keys) => n + keys.length, 0);
    expect(total).toBeGreaterThan(1000);
    for (const keys of byMaster) expect(keys.length).toBeGreaterThan(total / 6);

    const ref = await referenceState(await readPartitions(kafka, ns, sent), ns, features, serde);
    const contexts = log.filter((r) => r.record.kind === 'impression').map((r) => r.record.event as AdImpression);
    await expectSameVectors(features, contexts, online, ref.store);
  });
});
