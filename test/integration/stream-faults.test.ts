// Faults that used to wedge or blackhole a partition, through `tributary stream` on the real servers: dead letters
// larger than the dead-letter topic takes, an event from a skewed clock, a stop signal during retries, and a
// write no retry can cure. Each run must end, count what it consumed, and lose nothing.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, connect as dial, type Socket } from 'node:net';
import { Valkey } from 'iovalkey';
import kafkajs, { type KafkaMessage } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { allTopics, deadLetterTopic, topicOf } from '../../src/events/catalog.ts';
import { generate } from '../../src/events/generator.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AdImpression, EVENT_KINDS } from '../../src/events/types.ts';
import { createKafka, ensureTopics } from '../../src/kafka/client.ts';
import { ValkeyCheckpoints } from '../../src/streams/checkpoint.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import { topicsWithSmallDeadLetters } from '../support/streaming.ts';

const kafka = createKafka(KAFKA_BROKERS);
const valkey = new Valkey(VALKEY_URL);
afterAll(() => valkey.disconnect());
const stamp = Date.now();
const GROUP = 'tributary-stream';

interface Run {
  child: ChildProcess;
  stderr: () => string;
  /** Exit code (or signal) and how long after `since` the process ended. */
  exit: Promise<{ code: number | null; signal: string | null; at: number }>;
}

function stream(ns: string, valkeyUrl = VALKEY_URL, ...extra: string[]): Run {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'src/cli/main.ts', 'stream', '--namespace', ns, '--no-offline', ...extra],
    {
      env: {
        ...process.env,
        TRIBUTARY_KAFKA: KAFKA_BROKERS.join(','),
        TRIBUTARY_SCHEMA_REGISTRY: REGISTRY_URL,
        TRIBUTARY_VALKEY: valkeyUrl,
        TRIBUTARY_LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let err = '';
  child.stderr?.on('data', (d) => {
    err += d;
  });
  const exit = new Promise<{ code: number | null; signal: string | null; at: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  return { child, stderr: () => err, exit };
}

/** Kills the run if it has not ended within `ms` (a wedged stream), then resolves its exit. */
async function ended(run: Run, ms: number) {
  const timer = setTimeout(() => run.child.kill('SIGKILL'), ms);
  const e = await run.exit;
  clearTimeout(timer);
  return e;
}

async function until(what: string, done: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The run's last log line as an object ("stopped", with the counts). */
function lastLine(run: Run): Record<string, unknown> {
  const lines = run.stderr().trim().split('\n');
  return JSON.parse(lines[lines.length - 1] as string);
}

/** Live-looking impressions: the generator's shape, times around now. */
function impressions(n: number, at: (i: number) => number, tag: string): AdImpression[] {
  const sample = generate({ seed: 5, days: 1, impressionsPerDay: n * 4 })
    .filter((r) => r.record.kind === 'impression')
    .slice(0, n)
    .map((r) => r.record.event as AdImpression);
  return sample.map((e, i) => ({ ...e, event_id: `${tag}-${i}`, event_time: at(i) }));
}

async function prepare(ns: string) {
  const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
  await serde.prepare(EVENT_KINDS);
  const admin = kafka.admin();
  await admin.connect();
  await ensureTopics(admin, allTopics(ns), 3);
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  /** One send per call: messages to partition 0 of the impressions topic, log timestamp now. */
  const send = async (values: Buffer[]) => {
    await producer.send({
      topic: topicOf('impression', ns),
      messages: values.map((value) => ({ key: 'k', value, partition: 0 })),
    });
  };
  return { serde, send, close: () => producer.disconnect() };
}

async function readAll(topic: string, expected: number): Promise<KafkaMessage[]> {
  const consumer = kafka.consumer({ groupId: `reader-${Math.random()}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const out: KafkaMessage[] = [];
  await consumer.run({
    eachMessage: async ({ message }) => {
      out.push(message);
    },
  });
  await until(`${expected} messages in ${topic}`, () => out.length >= expected, 30_000);
  await new Promise((r) => setTimeout(r, 1000)); // and no more
  await consumer.disconnect();
  return out;
}

/** Messages the group's checkpoints cover: every committed offset of the namespace's source partitions. */
async function committed(ns: string): Promise<number> {
  let n = 0;
  for (const topic of [topicOf('impression', ns), topicOf('click', ns)])
    for (const p of [0, 1, 2]) n += Number((await valkey.hget(`tb:{ckpt|${ns}${GROUP}|${topic}/${p}}`, 'next')) ?? 0);
  return n;
}

/** The stream group's committed Kafka offset on partition 0 of the impressions topic (advisory; after the count). */
async function groupOffset(ns: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const [topic] = await admin.fetchOffsets({ groupId: `${ns}${GROUP}`, topics: [topicOf('impression', ns)] });
    return Number(topic?.partitions.find((p) => p.partition === 0)?.offset ?? -1);
  } finally {
    await admin.disconnect();
  }
}

describe('stream faults', () => {
  it('splits and truncates dead letters the topic would refuse, and one future event blackholes nothing', async () => {
    const ns = `flt${stamp}a.`;
    // A dead-letter topic that takes 100 kB per request: the batch's letters must be split, the largest cut.
    await topicsWithSmallDeadLetters(kafka, ns, 100_000);
    const { serde, send, close } = await prepare(ns);
    const now = Date.now();
    const live = (tag: string) => impressions(20, (i) => now - 5 * 60_000 + i * 1000, tag);
    const future = impressions(1, () => now + 6 * 3600_000, 'skewed')[0] as AdImpression;
    const big = [randomBytes(600_000), randomBytes(600_000)];
    const small = Array.from({ length: 30 }, () => randomBytes(10_000));
    await send(live('before').map((e) => serde.encode('impression', e)));
    await send([serde.encode('impression', future)]);
    await send(live('after').map((e) => serde.encode('impression', e)));
    for (const b of big) await send([b]); // each alone: two would exceed the source topic's own limit
    await send(small);
    await close();
    const total = 20 + 1 + 20 + big.length + small.length;

    const run = stream(ns, VALKEY_URL, '--until-caught-up');
    const exit = await ended(run, 90_000);
    expect(exit, run.stderr()).toMatchObject({ code: 0 });
    // Every message consumed is counted once: the live ones applied, none late, the rest dead-lettered.
    expect(lastLine(run)).toMatchObject({ msg: 'stopped', processed: total, applied: 40, late: 0, invalid: 33 });
    expect(await committed(ns)).toBe(total);

    const letters = await readAll(deadLetterTopic(ns), 33);
    expect(letters).toHaveLength(33);
    const headers = letters.map((m) =>
      Object.fromEntries(Object.entries(m.headers ?? {}).map(([k, v]) => [k, String(v)])),
    );
    expect(new Set(headers.map((h) => h.source_offset)).size).toBe(33); // each exactly once
    for (const h of headers) expect(h.reason).toBeTruthy();
    const skewed = headers.filter((h) => /future/.test(h.reason ?? ''));
    expect(skewed).toHaveLength(1);
    const cut = letters.filter((m) => String(m.headers?.truncated) === 'true');
    expect(cut).toHaveLength(2);
    for (const m of cut) {
      expect(String(m.headers?.original_size)).toBe('600000');
      expect(m.value?.length).toBeLessThan(100_000);
      expect(m.value?.length).toBeGreaterThan(50_000); // as much as fits, not nothing
    }
    const whole = letters.filter((m) => m.value?.length === 10_000);
    expect(whole).toHaveLength(30);
  }, 150_000);

  it('stops within a bound on a signal during retries, its last line counting what it committed', async () => {
    const ns = `flt${stamp}b.`;
    // Valkey through a proxy the test can cut: the stream's writes then fail and back off.
    const sockets = new Set<Socket>();
    const proxy = createServer((client) => {
      const upstream = dial(Number(new URL(VALKEY_URL).port), '127.0.0.1');
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => sockets.delete(s));
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const port = (proxy.address() as { port: number }).port;
    const { serde, send, close } = await prepare(ns);
    const now = Date.now();
    await send(impressions(10, (i) => now - 60_000 + i, 'first').map((e) => serde.encode('impression', e)));

    const run = stream(ns, `redis://127.0.0.1:${port}`);
    await until('the first events committed', async () => (await committed(ns)) === 10);
    // And known to the stream as committed: it resolves a batch's Kafka offsets only after counting it. A cut before
    // the checkpoint's reply reaches it would leave it rightly unsure, and counting nothing.
    await until('the stream to count them', async () => (await groupOffset(ns)) === 10);
    proxy.close();
    for (const s of sockets) s.destroy();
    await send(impressions(10, (i) => now - 30_000 + i, 'second').map((e) => serde.encode('impression', e)));
    await close();
    await until('a write backing off', () => /backing off/.test(run.stderr()), 60_000);

    const signalled = Date.now();
    run.child.kill('SIGINT');
    const exit = await ended(run, 30_000);
    expect(exit, run.stderr()).toMatchObject({ code: 0 });
    expect(exit.at - signalled).toBeLessThan(10_000);
    expect(run.stderr()).not.toMatch(/Connection is closed|\n\s+at /);
    expect(lastLine(run)).toMatchObject({ msg: 'stopped', processed: 10, applied: 10 });
    expect(await committed(ns)).toBe(10);
  }, 120_000);

  it('stops on a write no retry can cure, checkpoint unmoved, and resumes once it is fixed', async () => {
    const ns = `flt${stamp}c.`;
    // Where the group records batches in flight, a value of the wrong type: every write of it is refused.
    const pending = `tb:{seq|${ns}${GROUP}}|pending`;
    await valkey.set(pending, 'not a sorted set');
    const { serde, send, close } = await prepare(ns);
    const now = Date.now();
    await send(impressions(5, (i) => now - 60_000 + i, 'p').map((e) => serde.encode('impression', e)));
    await close();

    const failing = stream(ns, VALKEY_URL, '--until-caught-up');
    const exit = await ended(failing, 60_000);
    expect(exit, failing.stderr()).toMatchObject({ code: 1 });
    expect(failing.stderr()).toMatch(/checkpoint write for .* failed permanently: Valkey refused the write: WRONGTYPE/);
    expect(failing.stderr()).not.toMatch(/backing off/);
    expect(await committed(ns)).toBe(0);

    await valkey.del(pending);
    const fixed = stream(ns, VALKEY_URL, '--until-caught-up');
    expect(await ended(fixed, 60_000), fixed.stderr()).toMatchObject({ code: 0 });
    expect(lastLine(fixed)).toMatchObject({ processed: 5, applied: 5 });
  }, 150_000);

  it("replays a partition's first batch left in flight by a crash, recording served vectors", async () => {
    const ns = `flt${stamp}e.`;
    const { serde, send, close } = await prepare(ns);
    const now = Date.now();
    await send(impressions(5, (i) => now - 60_000 + i, 'e').map((e) => serde.encode('impression', e)));
    await close();
    // What a process SIGKILLed during the partition's first batch leaves: an intent, and no checkpoint before it.
    await new ValkeyCheckpoints(valkey, `${ns}${GROUP}`).begin(`${topicOf('impression', ns)}/0`, 0, 4);

    const run = stream(ns, VALKEY_URL, '--until-caught-up', '--record-served');
    expect(await ended(run, 60_000), run.stderr()).toMatchObject({ code: 0 });
    expect(lastLine(run)).toMatchObject({ processed: 5, applied: 5 });
    expect(await committed(ns)).toBe(5);
  }, 120_000);

  it('goes on when the dead-letter topic takes less than it did at start: smaller requests, a new producer', async () => {
    const ns = `flt${stamp}d.`;
    const { serde, send, close } = await prepare(ns);
    const now = Date.now();
    await send(impressions(5, (i) => now - 60_000 + i, 'd').map((e) => serde.encode('impression', e)));
    const run = stream(ns);
    await until('the first events committed', async () => (await committed(ns)) === 5);
    // The stream sized its requests to the topic's limit at start; the limit drops under it now.
    const admin = kafka.admin();
    await admin.connect();
    const topic = { type: kafkajs.ConfigResourceTypes.TOPIC, name: deadLetterTopic(ns) };
    await admin.alterConfigs({
      validateOnly: false,
      resources: [{ ...topic, configEntries: [{ name: 'max.message.bytes', value: '100000' }] }],
    });
    await until('the new limit in force', async () => {
      const d = await admin.describeConfigs({
        resources: [{ ...topic, configNames: ['max.message.bytes'] }],
        includeSynonyms: false,
      });
      return d.resources[0]?.configEntries[0]?.configValue === '100000';
    });
    await admin.disconnect();
    await new Promise((r) => setTimeout(r, 1000));
    await send(Array.from({ length: 12 }, () => randomBytes(30_000))); // 360 kB of letters in one batch
    await close();
    await until('the junk committed', async () => (await committed(ns)) === 17);

    run.child.kill('SIGTERM');
    expect(await ended(run, 30_000), run.stderr()).toMatchObject({ code: 0 });
    expect(run.stderr()).toMatch(/dead-letter request too large; splitting further/);
    expect(lastLine(run)).toMatchObject({ msg: 'stopped', processed: 17, applied: 5, invalid: 12 });
    const letters = await readAll(deadLetterTopic(ns), 12);
    expect(letters).toHaveLength(12);
    expect(new Set(letters.map((m) => String(m.headers?.source_offset))).size).toBe(12);
  }, 120_000);
});
