// `tributary dead-letters` against a real stream's dead letters, on Kafka (+ the registry, Valkey) and on the file
// log: `list` counts what the stream's metric counted, `show` decodes a letter, and a fix-and-replay puts back
// records a producer with a clock 20 minutes ahead sent (refused under the default --max-clock-skew 10m): each
// letter's record lands in its source partition once, also when a replay is killed midway and run again, and the
// stream restarted with --max-clock-skew 30m applies each once.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Valkey } from 'iovalkey';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { deadLetterReplaysTopic, topicOf } from '../../src/events/catalog.ts';
import { DEFAULT_GENERATOR_OPTIONS } from '../../src/events/generator.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AdImpression, EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { KafkaEventLog } from '../../src/kafka/event-log.ts';
import { EventPublisher } from '../../src/kafka/publish.ts';
import { FileEventLog } from '../../src/log/file-event-log.ts';
import { REPLAY_HEADER, readDeadLetter, readPartition } from '../../src/streams/dead-letter-reader.ts';
import { replayMessage } from '../../src/streams/dead-letter-replay.ts';
import type { EventLog } from '../../src/streams/event-log.ts';
import type { StreamMetrics } from '../../src/streams/metrics.ts';
import { openStream } from '../../src/streams/open.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import { caughtUp, LATENESS_MS, publishScenario, testStream, until } from '../support/streaming.ts';

const features = new FeatureSet(DEFAULT_GROUPS);
const stamp = Date.now();
const SKEWED = 6;
/** The skewed producer's clock, ahead of the log's: refused under 10 minutes, fine under 30. */
const AHEAD_MS = 20 * 60_000;
const SKEWED_REASON = `${AHEAD_MS / 1000}s ahead`;
const log = pino({ level: 'warn' });

/** Runs the CLI; `killAfter`: SIGKILL it once stdout holds this. */
function cli(env: NodeJS.ProcessEnv, args: string[], killAfter?: RegExp) {
  return new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      env: { ...process.env, ...env },
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => {
      stdout += d;
      if (killAfter?.test(stdout)) p.kill('SIGKILL');
    });
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** The scenario's log, its five bad messages, and SKEWED impressions 20 minutes ahead of their log timestamps. */
async function publish(eventLog: EventLog, serde: EventSerde, namespace: string) {
  const { log: generated } = await publishScenario(eventLog, serde, namespace, {
    seed: 7,
    days: 1,
    impressionsPerDay: 600,
    start: DEFAULT_GENERATOR_OPTIONS.start,
  });
  const last = generated.filter((r) => r.record.kind === 'impression').at(-1) as (typeof generated)[number];
  const producer = eventLog.producer();
  await producer.connect();
  const publisher = new EventPublisher(producer, serde, namespace);
  for (let i = 0; i < SKEWED; i++) {
    const ingestTime = last.ingestTime + i * 1000;
    const event = {
      ...(last.record.event as AdImpression),
      event_id: `skewed-${i}`,
      event_time: ingestTime + AHEAD_MS,
    };
    await publisher.add({ record: { kind: 'impression', event }, ingestTime });
  }
  await publisher.flush();
  await producer.disconnect();
}

/** The stream's dead-letter metric summed by reason class. */
async function metricByClass(metrics: StreamMetrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await metrics.deadLetters.get()).values)
    out[String(v.labels.reason)] = (out[String(v.labels.reason)] ?? 0) + v.value;
  return out;
}

async function replayCounter(metrics: StreamMetrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await metrics.replays.get()).values) out[String(v.labels.verdict)] = v.value;
  return out;
}

/** Per dead letter ("partition:offset"), how many replayed copies the source topics hold. */
async function copies(eventLog: EventLog, namespace: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const topic = topicOf('impression', namespace);
  for (const { partition } of await eventLog.endOffsets(topic))
    for await (const m of readPartition(eventLog, topic, partition)) {
      const of = m.headers?.[REPLAY_HEADER];
      if (of) out.set(of, (out.get(of) ?? 0) + 1);
    }
  return out;
}

/** list, show, and a replay killed midway then run twice more; returns the replayed letters' ids. */
async function listShowReplay(env: NodeJS.ProcessEnv, metrics: StreamMetrics, eventLog: EventLog, namespace: string) {
  const listed = await cli(env, ['dead-letters', 'list', '--json', '--examples', '20']);
  expect(listed.stderr).toBe('');
  const list = JSON.parse(listed.stdout) as {
    total: number;
    reasons: {
      reasonClass: string;
      count: number;
      examples: { partition: number; offset: number; reason: string }[];
    }[];
    topics: { topic: string; count: number }[];
  };
  const byClass = Object.fromEntries(list.reasons.map((r) => [r.reasonClass, r.count]));
  expect(byClass).toEqual(await metricByClass(metrics));
  expect(byClass['invalid impression']).toBeGreaterThanOrEqual(SKEWED + 2);
  expect(list.topics.reduce((n, t) => n + t.count, 0)).toBe(list.total);

  const skewed = list.reasons
    .flatMap((r) => r.examples)
    .filter((e) => e.reason.includes(SKEWED_REASON))
    .map((e) => `${e.partition}:${e.offset}`);
  expect(skewed).toHaveLength(SKEWED);
  const junk = list.reasons.find((r) => /magic byte|shorter than/.test(r.reasonClass))?.examples[0];
  const [shownOut, junkOut, missing] = await Promise.all([
    cli(env, ['dead-letters', 'show', skewed[0] as string, '--json']),
    cli(env, ['dead-letters', 'show', `${junk?.partition}:${junk?.offset}`, '--json']),
    cli(env, ['dead-letters', 'show', '0:99999999']),
  ]);
  const shown = JSON.parse(shownOut.stdout);
  expect(shown.decoded.schemaName).toMatch(/AdImpression$/);
  expect(shown.decoded.value.event_id).toMatch(/^skewed-/);
  expect(shown.source.topic).toBe(topicOf('impression', namespace));
  const junkShown = JSON.parse(junkOut.stdout);
  expect(junkShown.decoded).toBeUndefined();
  expect(junkShown.undecodable).toMatch(/magic byte|shorter than/);
  expect(junkShown.preview.utf8).toBe('definitely not avro');
  expect(missing.status).toBe(2);
  expect(missing.stderr).toMatch(/no dead letter at 0:99999999/);

  const dry = await cli(env, ['dead-letters', 'replay', '--reason', SKEWED_REASON, '--dry-run']);
  expect(dry.stdout).toMatch(new RegExp(`would replay ${SKEWED} of ${SKEWED} dead letters`));
  expect((await copies(eventLog, namespace)).size).toBe(0);
  // What runs killed mid-step leave: one letter begun and its record sent, not marked done; one only begun.
  const [sentOne, begunOnly] = await Promise.all(
    skewed.slice(0, 2).map((id) => {
      const [p, o] = id.split(':').map(Number);
      return readDeadLetter(eventLog, namespace, p as number, o as number);
    }),
  );
  const producer = eventLog.producer();
  await producer.connect();
  const ends = await eventLog.endOffsets(topicOf('impression', namespace));
  const begun = [sentOne, begunOnly].map((d) => ({
    state: 'begun',
    letter: `${d?.view.partition}:${d?.view.offset}`,
    target: { ...d?.view.source, from: ends.find((e) => e.partition === d?.view.source.partition)?.offset },
    sourceOffset: d?.view.source.offset,
  }));
  await eventLog.ensureTopics([deadLetterReplaysTopic(namespace)], 1);
  await producer.send([
    {
      topic: deadLetterReplaysTopic(namespace),
      messages: begun.map((e) => ({ key: e.letter, value: Buffer.from(JSON.stringify(e)) })),
    },
  ]);
  await producer.send([{ topic: topicOf('impression', namespace), messages: [replayMessage(sentOne as never)] }]);
  await producer.disconnect();
  // Killed once it has sent the first letter (maybe more by the time the signal lands), then run to the end.
  const killed = await cli(env, ['dead-letters', 'replay', '--reason', SKEWED_REASON, '--batch', '1'], /sent 1\n/);
  expect(killed.stdout).toMatch(/sent 1\n/);
  const sentBefore = (await copies(eventLog, namespace)).size;
  expect(sentBefore).toBeGreaterThan(0);
  const rerun = await cli(env, ['dead-letters', 'replay', '--reason', SKEWED_REASON, '--batch', '2']);
  expect(rerun.stderr).toBe('');
  expect(rerun.stdout).toMatch(/replayed \d+ of 6 dead letters/);
  const again = await cli(env, ['dead-letters', 'replay', '--reason', SKEWED_REASON]);
  expect(again.stdout).toMatch(`replayed 0 of ${SKEWED} dead letters (${SKEWED} replayed before, 0 refused)`);
  const landed = await copies(eventLog, namespace);
  expect([...landed.keys()].sort()).toEqual([...skewed].sort());
  expect([...landed.values()].every((n) => n === 1)).toBe(true);

  const after = JSON.parse((await cli(env, ['dead-letters', 'list', '--json', '--reason', SKEWED_REASON])).stdout);
  expect(after.reasons).toMatchObject([{ reasonClass: 'invalid impression', count: SKEWED, replayed: SKEWED }]);
  return skewed;
}

describe('dead letters on Kafka', () => {
  const kafka = createKafka(KAFKA_BROKERS);
  const eventLog = new KafkaEventLog(kafka, KAFKA_BROKERS);
  const valkey = new Valkey(VALKEY_URL, { enableAutoPipelining: true });
  afterAll(() => valkey.disconnect());
  const namespace = `dl${stamp}.`;
  const env = {
    TRIBUTARY_KAFKA: KAFKA_BROKERS.join(','),
    TRIBUTARY_SCHEMA_REGISTRY: REGISTRY_URL,
    TRIBUTARY_NAMESPACE: namespace,
  };

  it('lists what the stream counted, shows one decoded, and replays each fixed letter once', {
    timeout: 180_000,
  }, async () => {
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    await publish(eventLog, serde, namespace);
    const first = testStream(kafka, valkey, features, namespace, { maxBatch: 400 });
    await first.service.start();
    await until('the stream caught up', () => caughtUp(kafka, valkey, namespace, `${namespace}stream`));
    await first.service.stop();

    await listShowReplay(env, first.metrics, eventLog, namespace);

    // The fix: the same group, resumed from its checkpoints, with a clock skew the skewed producer stays within.
    const fixed = testStream(kafka, valkey, features, namespace, { maxBatch: 400, maxClockSkewMs: 30 * 60_000 });
    await fixed.service.start();
    await until('the replays applied', () => caughtUp(kafka, valkey, namespace, `${namespace}stream`));
    await fixed.service.stop();
    expect(await replayCounter(fixed.metrics)).toEqual({ applied: SKEWED });
    expect(fixed.service.counts).toEqual({ applied: SKEWED, late: 0, duplicate: 0, invalid: 0 });
  });
});

describe('dead letters on the file log', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-dead-letters-'));
  const env = { TRIBUTARY_KAFKA: '', TRIBUTARY_VALKEY: '', TRIBUTARY_SCHEMA_REGISTRY: '', TRIBUTARY_LOG_DIR: dir };
  const config = loadConfig({ logDir: dir }, {});

  const run = async (maxClockSkewMs?: number) => {
    const stream = await openStream(config, {
      features,
      group: 'stream',
      allowedLatenessMs: LATENESS_MS,
      maxClockSkewMs,
      maxBatch: 400,
      log,
    });
    await stream.service.start();
    await until('the stream caught up', () => stream.caughtUp());
    await stream.close();
    return stream;
  };

  it('lists what the stream counted, shows one decoded, and replays each fixed letter once', {
    timeout: 120_000,
  }, async () => {
    const eventLog = new FileEventLog(dir);
    // As openSerde: the in-memory registry, schemas registered in one fixed order, so every process has the same ids.
    const serde = new EventSerde(createRegistryClient());
    await serde.prepare(EVENT_KINDS);
    await publish(eventLog, serde, '');
    const first = await run();
    await listShowReplay(env, first.metrics, eventLog, '');

    // A restart with the fix rebuilds from the log's start: the originals are applied where they stand, so each
    // replayed copy is a duplicate of its event, and no event is applied twice.
    const fixed = await run(30 * 60_000);
    expect(await replayCounter(fixed.metrics)).toEqual({ duplicate: SKEWED });
    expect(fixed.service.counts.applied).toBe(first.service.counts.applied + SKEWED);
    expect(fixed.service.counts.invalid).toBe(first.service.counts.invalid - SKEWED);
  });
});
