// The stream on a three-broker Kafka (scripts/services/kafka-cluster.sh): topics replicated three times with
// min.insync.replicas=2, and a broker SIGKILLed while events are produced and streamed, restarted later. Every event
// lands in the log once and is counted once, the dead letters are exactly the replay's, the online state equals the
// replay's, and the stream stalls no longer than a bound while leadership moves.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Valkey } from 'iovalkey';
import kafkajs from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { allTopics, deadLetterTopic, topicOf } from '../../src/events/catalog.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AdImpression, EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka, withAdmin } from '../../src/kafka/client.ts';
import { KafkaEventLog } from '../../src/kafka/event-log.ts';
import { KAFKA_CLUSTER_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import {
  expectSameVectors,
  publishScenario,
  readPartitions,
  referenceState,
  testStream,
  until,
} from '../support/streaming.ts';

const ns = `kc${Date.now()}.`;
const group = `${ns}stream`;
const kafka = createKafka(KAFKA_CLUSTER_BROKERS);
const eventLog = new KafkaEventLog(kafka, KAFKA_CLUSTER_BROKERS);
const valkey = new Valkey(VALKEY_URL, { enableAutoPipelining: true });
const features = new FeatureSet(DEFAULT_GROUPS);
const script = (...args: string[]) => promisify(execFile)('bash', ['scripts/services/kafka-cluster.sh', ...args]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A broker this test killed and has not restarted (brought back if an assertion fails meanwhile). */
let down: number | undefined;

afterAll(async () => {
  if (down !== undefined) await script('start-broker', String(down));
  let cursor = '0';
  do {
    const [next, keys] = await valkey.scan(cursor, 'MATCH', `*${ns}*`, 'COUNT', 1000);
    if (keys.length > 0) await valkey.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
  valkey.disconnect();
  await withAdmin(kafka, KAFKA_CLUSTER_BROKERS, (admin) => admin.deleteTopics({ topics: allTopics(ns) })).catch(
    () => undefined,
  );
}, 180_000);

/** Java's String.hashCode, which places a group on a partition of __consumer_offsets. */
function javaHash(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (Math.imul(h, 31) + s.charCodeAt(i)) | 0;
  return h;
}

/** Per topic-partition ("topic/p"), its leader. */
async function leaders(topics: string[]): Promise<Map<string, number>> {
  const md = await withAdmin(kafka, KAFKA_CLUSTER_BROKERS, (admin) => admin.fetchTopicMetadata({ topics }));
  return new Map(md.topics.flatMap((t) => t.partitions.map((p) => [`${t.name}/${p.partitionId}`, p.leader] as const)));
}

/** The broker coordinating `groupId`: the leader of its partition of __consumer_offsets. */
async function coordinator(groupId: string): Promise<number> {
  const offsets = await leaders(['__consumer_offsets']);
  const hash = javaHash(groupId);
  const partition = (hash === -2147483648 ? 0 : Math.abs(hash)) % offsets.size;
  return offsets.get(`__consumer_offsets/${partition}`) as number;
}

const messagesIn = async (topic: string) => (await eventLog.endOffsets(topic)).reduce((n, p) => n + p.offset, 0);

describe('the stream on a three-broker Kafka', () => {
  it('counts every event once through a broker SIGKILL and restart, its dead letters unchanged, stalling briefly', {
    timeout: 300_000,
  }, async () => {
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    const ROUNDS = 60;
    const { log, sent, held, publishRest } = await publishScenario(
      eventLog,
      serde,
      ns,
      { seed: 17, days: 1, impressionsPerDay: 6000, lateShare: 0.03, duplicateShare: 0.03 },
      { holdBack: 0.85 },
    );

    // Replicated on all three brokers, a write needing two of them.
    await withAdmin(kafka, KAFKA_CLUSTER_BROKERS, async (admin) => {
      const md = await admin.fetchTopicMetadata({ topics: allTopics(ns) });
      for (const t of md.topics) for (const p of t.partitions) expect(p.replicas).toHaveLength(3);
      const configs = await admin.describeConfigs({
        resources: allTopics(ns).map((name) => ({
          type: kafkajs.ConfigResourceTypes.TOPIC,
          name,
          configNames: ['min.insync.replicas'],
        })),
        includeSynonyms: false,
      });
      for (const r of configs.resources) expect(r.configEntries[0]?.configValue).toBe('2');
    });

    const { service, online } = testStream(eventLog, valkey, features, ns, { maxBatch: 500 });
    await service.start();
    await until('the stream to start on the first share', () => service.processed > sent * 0.05, 60_000);

    // Production lasts: the rest of the log in rounds, before, through and after the kill.
    let round = 0;
    let inLog = sent - held;
    const rounds: number[] = [];
    const production = publishRest({
      rounds: ROUNDS,
      pauseMs: 400,
      onRound: (r, published) => {
        round = r;
        inLog = sent - held + published;
        rounds.push(Date.now());
      },
    });
    production.catch(() => undefined); // awaited below, where a failure fails the test
    // The stream's progress every 100 ms while the producer produces, and what the log held for it then.
    const samples: { at: number; processed: number; inLog: number }[] = [];
    const sampler = setInterval(() => samples.push({ at: Date.now(), processed: service.processed, inLog }), 100);

    await until('a few rounds', () => round >= 8, 60_000);
    // The group's coordinator, which leads some partitions of the namespace's topics too (or else one that does).
    const sources = [topicOf('impression', ns), topicOf('click', ns), deadLetterTopic(ns)];
    const before = await leaders(sources);
    const coord = await coordinator(group);
    const victim = [...before.values()].includes(coord) ? coord : (before.values().next().value as number);
    const led = [...before].filter(([, l]) => l === victim).map(([tp]) => tp);
    const killedAt = Date.now();
    const roundAtKill = round;
    await script('kill-broker', String(victim));
    down = victim;
    // Its partitions get new leaders once the controllers fence it.
    await until(
      'leaders elected away from the dead broker',
      () =>
        leaders(sources).then(
          (now) => [...now.values()].every((l) => l !== victim && l >= 0),
          () => false, // asked the dead broker
        ),
      60_000,
    );
    const electedMs = Date.now() - killedAt;
    await sleep(5000);
    const restartAt = Date.now();
    await script('start-broker', String(victim));
    down = undefined;
    const restartedMs = Date.now() - restartAt;
    const roundAtRestart = round;
    await production;
    clearInterval(sampler);
    await until('the stream to process every message', () => service.processed >= sent, 120_000);
    await service.stop();

    // Stalls: the longest time the count stood still (end to end: the producer's own stall included), and the
    // longest it stood still with events in the log waiting for it (the stream's own).
    let stall = 0;
    let waiting = 0;
    let since = samples[0];
    for (const s of samples) {
      if (!since || s.processed !== since.processed) since = s;
      stall = Math.max(stall, s.at - since.at);
      if (since.processed < since.inLog) waiting = Math.max(waiting, s.at - since.at);
    }
    const longestGap = (times: number[]) => Math.max(...times.slice(1).map((t, i) => t - (times[i] as number)));
    const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    console.log(
      `kafka-cluster: ${sent} events; broker ${victim} (group coordinator: ${coord === victim}; leading ` +
        `${led.join(' ')}) SIGKILLed at round ${roundAtKill}/${ROUNDS}, its partitions' leaders moved in ` +
        `${secs(electedMs)}, restarted in ${secs(restartedMs)} at round ${roundAtRestart}; longest stall: end to end ` +
        `${secs(stall)}, with events waiting ${secs(waiting)}, of the producer ${secs(longestGap(rounds))}`,
    );
    // The kill landed mid-production, and production went on while the broker was down.
    expect(roundAtKill).toBeLessThan(ROUNDS);
    expect(roundAtRestart).toBeGreaterThan(roundAtKill);
    expect(led.length).toBeGreaterThan(0);
    // End to end it stands still while the producer waits for new leaders; with events waiting for it, the stream
    // stands still no longer than the election took (a second's slack for the 100 ms samples and this machine).
    expect(stall).toBeLessThan(30_000);
    expect(waiting).toBeLessThan(electedMs + 1_000);

    // In the log once (idempotent producers), counted once, dead letters as the replay has them.
    expect((await messagesIn(sources[0] as string)) + (await messagesIn(sources[1] as string))).toBe(sent);
    expect(service.processed).toBe(sent);
    const ref = await referenceState(await readPartitions(eventLog, ns, sent), ns, features, serde);
    expect(service.counts).toEqual(ref.counts);
    expect(ref.counts.invalid).toBeGreaterThanOrEqual(5);
    const deadLetters = await messagesIn(deadLetterTopic(ns));
    console.log(`kafka-cluster: counted ${JSON.stringify(service.counts)}; ${deadLetters} dead letters`);
    expect(deadLetters).toBe(ref.reasons.length);
    const contexts = log.filter((r) => r.record.kind === 'impression').map((r) => r.record.event as AdImpression);
    await expectSameVectors(features, contexts, online, ref.store);
  });
});
