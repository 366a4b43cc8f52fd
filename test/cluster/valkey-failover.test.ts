// A master of the Valkey Cluster is SIGKILLed while the stream writes and rankings read (the one holding the stream's
// checkpoint sequence): its replica takes over, the stream goes on, the killed node comes back as a replica, and
// nothing is lost or doubled (the state read back equals an in-process replay: every batch's parts reached the
// replica before the batch was checkpointed). No ranking fails (defaults while the slots have no master are allowed
// and counted), and afterwards serve's stack, read cache on, ranks as the same model over the replay's state.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import calculateSlot from 'cluster-key-slot';
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
import { dropKeys } from '../support/valkey-cluster.ts';

const ns = `vf${Date.now()}.`;
const kafka = createKafka(KAFKA_BROKERS);
const features = new FeatureSet(DEFAULT_GROUPS);
const script = (...args: string[]) =>
  execFileSync('bash', ['scripts/services/valkey-cluster.sh', ...args], { stdio: 'ignore' });
let cluster: Cluster | undefined;
let killed: string | undefined;

afterAll(async () => {
  if (killed) script('start-node', killed);
  if (!cluster) return;
  await dropKeys(cluster, `${ns}*`);
  cluster.disconnect();
});

describe('a Valkey Cluster master failing over', () => {
  it('loses and doubles nothing of the stream, and fails no ranking', { timeout: 300_000 }, async () => {
    cluster = (await connectValkey(VALKEY_CLUSTER_URL, { enableAutoPipelining: true })) as Cluster;
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    const scenario = { seed: 45, days: 2, impressionsPerDay: 3000, lateShare: 0.03, duplicateShare: 0.03 };
    const { log, sent, publishRest } = await publishScenario(kafka, serde, ns, scenario, { holdBack: 0.5 });
    const contexts = log.filter((r) => r.record.kind === 'impression').map((r) => r.record.event as AdImpression);
    const registry = new ModelRegistry(mkdtempSync(join(tmpdir(), 'vf-models-')));
    await registry.promote(await trainAndRegister(registry, features, replayRecords(log), 1));
    const config = loadConfig(
      { valkey: VALKEY_CLUSTER_URL, namespace: ns, modelsDir: registry.dir, rankTimeoutMs: 1000 },
      {},
    );
    const scoring = await openScoring(config);
    const { service, online } = testStream(kafka, cluster, features, ns, { maxBatch: 150 });
    try {
      const time = Math.max(...contexts.map((c) => c.event_time)) + 60_000;
      const rankings = rankAlong(scoring.ranker, contexts, time);

      await service.start();
      await until('the stream to write state', () => service.processed > 500, 30_000);
      // The master serving the stream's checkpoint sequence.
      const slot = calculateSlot(`tb:{seq|${ns}stream}`);
      const master = cluster.slots[slot]?.[0] as string;
      killed = master.split(':')[1] as string;
      const at = { processed: service.processed, ms: Date.now() };
      script('kill-node', killed);
      // A node still up says who serves the slot: a master that is not the killed one.
      const promoted = async () => {
        const lines = await cluster
          ?.nodes('all')
          .find((n) => n.options.port !== Number(killed))
          ?.call('CLUSTER', 'NODES')
          .then(String, () => '');
        return (lines ?? '')
          .split('\n')
          .some((l) => l.includes('master') && !l.includes('fail') && !l.includes(`:${killed}@`) && covers(l, slot));
      };
      await until('a replica to take over the killed master', promoted, 30_000);
      const failover = { ms: Date.now() - at.ms, processed: service.processed };
      await publishRest();
      script('start-node', killed);
      await until('the stream to process every message', () => service.processed >= sent, 120_000);
      const ranked = await rankings.stop();
      await service.stop();
      console.log(
        `failover: master ${master} killed at ${at.processed} of ${sent} events, a replica serving its slots after ` +
          `${failover.ms} ms (${failover.processed} processed by then); rankings ${ranked.ok} with features, ` +
          `${ranked.defaulted} on defaults`,
      );
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
});

/** Whether a CLUSTER NODES line's slot ranges cover `slot`. */
function covers(line: string, slot: number): boolean {
  return line
    .split(' ')
    .slice(8)
    .some((r) => {
      const [from, to] = r.split('-').map(Number);
      return from !== undefined && slot >= from && slot <= (to ?? from);
    });
}
