// The streaming benchmark. Under a fresh namespace (3 partitions) it publishes a generated log, then measures:
// - baseline: a kafkajs consumer group with StreamService's consumer settings that only counts messages;
// - the real StreamService, wired as `tributary stream` wires it, in a process of its own (stream-process.ts), once
//   without and once with the offline sink (the embedded ClickHouse in a temp dir).
// Throughput is wall-clock events/s from the moment the group has joined until every event is processed (the
// service's `processed` counter, polled every 2 ms), events per CPU-second of the stream's process (all threads,
// the embedded ClickHouse's included; the counting consumer's: this process's), and the Valkey server's CPU time
// over the same interval (INFO cpu).
//
// Yardsticks over the same events, each alone in this process: the replay engine, the Avro decode, the offline
// write, the engine with the online write (no Kafka), and a bare scripted write of as many parts; summed, they bound
// what any stream of this shape can reach per CPU-second.
//
// Latency, once a consumer is caught up, at two paced rates (--latency-rate, default 200/s, and --paced-rate, default
// 10,000/s): fresh copies of generated impressions (event_time now), open loop: each has a scheduled send time, and
// every millisecond the ones due are sent in one request (round robin over the partitions, so each one's offset is
// known from the ack). Latencies run from the scheduled time (a sender running late is counted, not hidden). An event
// is online when the stream's write of a batch ending at or past its offset has been acknowledged by Valkey (the
// store's applyBatch resolved, reported by the stream process with its clock's epoch time). The baseline is delivery
// to the counting consumer, measured alone before the stream starts.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Valkey } from 'iovalkey';
import type { ReplayRecord } from '../src/backfill/replay.ts';
import { allTopics } from '../src/events/catalog.ts';
import { generate } from '../src/events/generator.ts';
import { createRegistryClient } from '../src/events/registry.ts';
import { EventSerde } from '../src/events/serde.ts';
import { type AdClick, type AdImpression, EVENT_KINDS } from '../src/events/types.ts';
import { FeatureSet } from '../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../src/features/definitions.ts';
import { createKafka, ensureTopics, withAdmin } from '../src/kafka/client.ts';
import { KafkaLogProducer } from '../src/kafka/event-log.ts';
import { EventPublisher } from '../src/kafka/publish.ts';
import { type ClickRow, type ImpressionRow, OfflineSink } from '../src/offline/sink.ts';
import { ValkeyStore } from '../src/online/valkey-store.ts';
import { clickRow, impressionRow, sourceTopics } from '../src/streams/processor.ts';
import { replayAll } from './backfill.ts';
import {
  type Bench,
  type BenchContext,
  type Measured,
  percentile,
  type Row,
  SERVERS,
  sleep,
  tempOfflineStore,
  until,
} from './lib.ts';
import type { FromStream, ToStream } from './stream-process.ts';

const PARTITIONS = 3;
/** `tributary stream`'s default --allowed-lateness. */
const LATENESS_MS = 3600_000;
/** StreamService's consumer settings (src/streams/service.ts), so the baseline fetches the same way. */
const CONSUMER_SETTINGS = {
  sessionTimeout: 10_000,
  rebalanceTimeout: 20_000,
  heartbeatInterval: 1_000,
  maxBytesPerPartition: 4 << 20,
};
const VARIANTS = [
  { key: 'online', name: 'stream: Valkey', offline: false, split: false },
  { key: 'full', name: 'stream: Valkey+ClickHouse', offline: true, split: false },
  // `tributary stream --no-offline` beside `tributary stream --no-online --group …`: two processes, two groups.
  { key: 'split', name: 'stream: Valkey, ClickHouse in a 2nd group', offline: true, split: true },
] as const;

interface Latency {
  /** Probes per second. */
  rate: number;
  /** ms from the scheduled send to: the produce ack, the counting consumer's delivery, the write in Valkey. */
  ack: number[];
  delivered: number[];
  visible: number[];
}

interface Settings {
  /** Latency probes: at these rates (per second), for `seconds` each. */
  rates: number[];
  seconds: number;
  maxBatch: number;
}

interface Phase extends Measured {
  events: number;
  /** CPU time the Valkey server used meanwhile (INFO cpu: all its clients, not just ours). */
  valkeyCpuSeconds: number;
  /** What the Valkey server's data grew by meanwhile (INFO memory, used_memory), bytes. */
  valkeyBytes?: number;
}

type Run = { phase: Phase; latency: Latency[] };
/** Batches the service finished (its batch_seconds histogram): how many, total ms. */
type BatchStats = { count: number; ms: number };
type StreamRun = Run & { batches: { throughput: BatchStats; latency: BatchStats } };

/** The stream under measurement in its own process (stream-process.ts), and when it wrote each batch to Valkey. */
export class StreamProcess {
  private readonly child = fork(fileURLToPath(new URL('./stream-process.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  /** Per source partition, when (this process's performance.now()) each batch's write was acknowledged, in order. */
  private readonly ends = new Map<string, { offset: number; at: number }[]>();
  private readonly waiting: {
    type: FromStream['type'];
    resolve: (m: FromStream) => void;
    reject: (e: Error) => void;
  }[] = [];
  private failure?: Error;

  constructor() {
    this.child.on('message', (m: FromStream) => {
      if (m.type === 'written') {
        const ends = this.ends.get(m.source) ?? [];
        this.ends.set(m.source, ends);
        ends.push({ offset: m.offset, at: m.at - performance.timeOrigin });
      } else if (m.type === 'failed') this.fail(new Error(`the stream process failed: ${m.message}`));
      else {
        const i = this.waiting.findIndex((w) => w.type === m.type);
        if (i >= 0) this.waiting.splice(i, 1)[0]?.resolve(m);
      }
    });
    this.child.on('exit', (code) => this.fail(new Error(`the stream process exited (${code})`)));
  }

  private fail(err: Error) {
    this.failure ??= err;
    for (const w of this.waiting.splice(0)) w.reject(err);
  }

  ask<T extends FromStream['type']>(message: ToStream, reply: T): Promise<Extract<FromStream, { type: T }>> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting.push({ type: reply, resolve: resolve as (m: FromStream) => void, reject });
      this.child.send(message);
    });
  }

  /** When the write of offset `offset` of `source` was acknowledged; undefined while it is not. */
  written(source: string, offset: number): number | undefined {
    const ends = this.ends.get(source) ?? [];
    let lo = 0;
    let hi = ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((ends[mid] as { offset: number }).offset >= offset) hi = mid;
      else lo = mid + 1;
    }
    return ends[lo]?.at;
  }

  async stop(): Promise<void> {
    if (!this.failure) await this.ask({ type: 'stop' }, 'stopped').catch(() => undefined);
    this.child.kill();
  }
}

class StreamBench {
  readonly ns = `bench${Date.now()}.`;
  private readonly kafka = createKafka(SERVERS.kafka, 'tributary-bench');
  private readonly serde = new EventSerde(createRegistryClient(SERVERS.registry));
  private readonly valkey = new Valkey(SERVERS.valkey, { enableAutoPipelining: true });
  /** Probes are sent open loop: requests overlap, none waits for the one before. */
  private readonly probeProducer = this.kafka.producer({ maxInFlightRequests: 64 });
  /** The baseline group; it keeps running to time the delivery of latency probes. */
  private readonly raw = this.kafka.consumer({ groupId: `${this.ns}raw`, ...CONSUMER_SETTINGS });
  private counted = 0;
  private readonly delivered = new Map<string, number>();
  private watching = false;
  /** Messages in the source topics so far. */
  private published = 0;
  private templates: AdImpression[] = [];
  /** The published impressions and clicks, for the engine and the offline write measured alone. */
  private records: ReplayRecord[] = [];

  constructor(
    private readonly ctx: BenchContext,
    private readonly settings: Settings,
  ) {}

  async setUp(): Promise<void> {
    await this.serde.prepare(EVENT_KINDS);
    await withAdmin(this.kafka, SERVERS.kafka, (admin) => ensureTopics(admin, allTopics(this.ns), PARTITIONS));
    await this.probeProducer.connect();
  }

  /**
   * Publishes `total` generated events (the last 3 days of traffic up to now, cut in ingestion order, so the
   * latency probes' event time continues the log's); returns events/s.
   */
  async publish(total: number): Promise<number> {
    const days = 3;
    const start = Date.now() - days * 86400_000;
    const log = generate({ start, days, impressionsPerDay: Math.ceil(total / days) }).slice(0, total);
    this.records = [];
    for (const { record } of log)
      if (record.kind === 'impression' || record.kind === 'click')
        this.records.push({ source: record.kind, partition: 'file/0', event: record.event } as ReplayRecord);
    this.templates = log
      .filter((r) => r.record.kind === 'impression')
      .slice(0, 5000)
      .map((r) => r.record.event as AdImpression);
    const producer = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const t0 = performance.now();
    const publisher = new EventPublisher(new KafkaLogProducer(producer), this.serde, this.ns);
    for (const r of log) await publisher.add(r);
    await publisher.flush();
    const seconds = (performance.now() - t0) / 1000;
    await producer.disconnect();
    this.published = publisher.published;
    return this.published / seconds;
  }

  /** The counting consumer's rate, then its delivery latency with nothing else running in the process. */
  async baseline(): Promise<Run> {
    await this.raw.connect();
    await this.raw.subscribe({ topics: Object.values(sourceTopics(this.ns)), fromBeginning: true });
    await this.raw.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        this.counted += batch.messages.length;
        if (!this.watching) return;
        const now = performance.now();
        for (const m of batch.messages) this.delivered.set(`${batch.topic}/${batch.partition}@${m.offset}`, now);
      },
    });
    const events = this.published;
    const phase = await this.measure('raw', events, () =>
      until('the counting consumer', () => this.counted >= events, 300_000, 1),
    );
    return { phase, latency: await this.latencies('baseline', 'raw') };
  }

  /**
   * The service as `tributary stream` wires it, in its own process, under its own keys and group: from nothing. Split:
   * one process writes Valkey, another (its own group) ClickHouse; their CPU and memory are summed, latency is the
   * Valkey writer's.
   */
  async stream(variant: (typeof VARIANTS)[number]): Promise<StreamRun> {
    const groupId = `${this.ns}${variant.key}.`;
    const stream = new StreamProcess();
    const offline = variant.split ? new StreamProcess() : undefined;
    const all = offline ? [stream, offline] : [stream];
    try {
      const start = { type: 'start', namespace: this.ns, maxBatch: this.settings.maxBatch, latenessMs: LATENESS_MS };
      await Promise.all([
        stream.ask(
          { ...start, type: 'start', groupId, online: true, offline: variant.offline && !variant.split },
          'started',
        ),
        offline?.ask(
          { ...start, type: 'start', groupId: `${groupId}offline.`, online: false, offline: true },
          'started',
        ),
      ]);
      const events = this.published;
      this.ctx.log(`${variant.name}: consuming ${events} events`);
      const valkeyCpu0 = await this.valkeyCpu();
      const valkeyBytes0 = await this.valkeyBytes();
      await Promise.all(
        all.map((p, i) =>
          p.ask({ type: 'meter', label: `${variant.key}${i || ''}`, profileDir: this.ctx.profileDir }, 'metered'),
        ),
      );
      await Promise.all(all.map((p) => p.ask({ type: 'reach', events }, 'reached')));
      const measured = await Promise.all(all.map((p) => p.ask({ type: 'measure' }, 'measured')));
      const phase = {
        seconds: Math.max(...measured.map((m) => m.seconds)),
        cpuSeconds: measured.reduce((t, m) => t + m.cpuSeconds, 0),
        peakRssMB: measured.reduce((t, m) => t + m.peakRssMB, 0),
        events,
        valkeyCpuSeconds: (await this.valkeyCpu()) - valkeyCpu0,
        valkeyBytes: (await this.valkeyBytes()) - valkeyBytes0,
      };
      const { type: __, ...batches } = await stream.ask({ type: 'batches' }, 'batches');
      const latency = await this.latencies(variant.name, variant.key, stream);
      const { type: ___, ...later } = await stream.ask({ type: 'batches' }, 'batches');
      return {
        phase,
        latency,
        batches: { throughput: batches, latency: { count: later.count - batches.count, ms: later.ms - batches.ms } },
      };
    } finally {
      await Promise.all(all.map((p) => p.stop()));
    }
  }

  private async measure(label: string, events: number, run: () => Promise<void>): Promise<Phase> {
    const valkeyCpu0 = await this.valkeyCpu();
    const meter = await this.ctx.meter(label);
    await run();
    const m = await meter.stop();
    return { ...m, events, valkeyCpuSeconds: (await this.valkeyCpu()) - valkeyCpu0 };
  }

  private async valkeyBytes(): Promise<number> {
    return Number(/^used_memory:(\d+)/m.exec(await this.valkey.info('memory'))?.[1] ?? 0);
  }

  private async valkeyCpu(): Promise<number> {
    const info = await this.valkey.info('cpu');
    const seconds = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? 0);
    return seconds('used_cpu_user') + seconds('used_cpu_sys');
  }

  private async latencies(name: string, label: string, written?: StreamProcess): Promise<Latency[]> {
    const out: Latency[] = [];
    for (const rate of this.settings.rates) {
      this.ctx.log(`${name}: latency of ${rate * this.settings.seconds} events paced at ${rate}/s`);
      out.push(await this.latency(`${label}-${rate}`, rate, written));
    }
    return out;
  }

  /**
   * Fresh copies of generated impressions, event_time now, paced open loop at `rate`/s. With `written`, also waits
   * for each to be written to Valkey.
   */
  private async latency(label: string, rate: number, written?: StreamProcess): Promise<Latency> {
    const count = Math.round(rate * this.settings.seconds);
    const out: Latency = { rate, ack: [], delivered: [], visible: [] };
    const topic = sourceTopics(this.ns).impression;
    this.delivered.clear();
    this.watching = true;
    const probes: { scheduled: number; id: string; offset: number }[] = [];
    const sends: Promise<void>[] = [];
    const t0 = performance.now();
    const scheduled = (i: number) => t0 + (i * 1000) / rate;
    for (let next = 0; next < count; ) {
      const due = Math.min(count, Math.floor(((performance.now() - t0) * rate) / 1000) + 1);
      if (due > next) {
        const first = next;
        const messages: { key: string; value: Buffer; partition: number }[] = [];
        for (; next < due; next++) {
          const template = this.templates[next % this.templates.length] as AdImpression;
          const event = { ...template, event_id: `${label}-${next}`, event_time: Date.now() };
          const value = this.serde.encode('impression', event);
          messages.push({ key: event.user_id, value, partition: next % PARTITIONS });
        }
        sends.push(
          this.probeProducer.send({ topic, acks: -1, messages }).then((meta) => {
            const acked = performance.now();
            const base = new Map(meta.map((m) => [m.partition, Number(m.baseOffset)]));
            messages.forEach((m, k) => {
              const i = first + k;
              // Round robin: this request's messages of one partition are consecutive offsets from its base.
              const offset = (base.get(m.partition) as number) + Math.floor(k / PARTITIONS);
              probes[i] = { scheduled: scheduled(i), id: `${topic}/${m.partition}`, offset };
              out.ack.push(acked - scheduled(i));
            });
          }),
        );
      }
      await sleep(Math.max(0, scheduled(next) - performance.now()));
    }
    await Promise.all(sends);
    const visible = (p: { id: string; offset: number }) => written?.written(p.id, p.offset);
    if (written)
      await until(
        `${label}: every probe written to Valkey`,
        () => probes.every((p) => visible(p) !== undefined),
        60_000,
      );
    const deliveredAt = (p: { id: string; offset: number }) => this.delivered.get(`${p.id}@${p.offset}`);
    await until(
      `${label}: the counting consumer to get every probe`,
      () => probes.every((p) => deliveredAt(p)),
      60_000,
    );
    for (const p of probes) {
      out.delivered.push((deliveredAt(p) as number) - p.scheduled);
      if (written) out.visible.push((visible(p) as number) - p.scheduled);
    }
    this.watching = false;
    this.published += count;
    return out;
  }

  /** The replay engine (src/backfill) over the same events in memory: the work the stream's features are. */
  async engine(): Promise<Phase> {
    await replayAll(this.records.slice(0, 20_000), 'rings'); // warm up
    const meter = await this.ctx.meter('engine');
    await replayAll(this.records, 'rings');
    return { ...(await meter.stop()), events: this.records.length, valkeyCpuSeconds: 0 };
  }

  /** Avro decode alone: the published events as wire bytes (Confluent framing), decoded as the stream decodes them. */
  async decode(): Promise<Phase> {
    const wire = this.records.map((r) => ({ kind: r.source, value: this.serde.encode(r.source, r.event as never) }));
    for (const kind of ['impression', 'click'] as const)
      await this.serde.resolve(
        kind,
        wire.filter((w) => w.kind === kind),
      );
    const meter = await this.ctx.meter('decode');
    let n = 0;
    for (const w of wire) if (this.serde.decodeResolved(w.kind, w.value, Date.now(), 3600_000)) n++;
    return { ...(await meter.stop()), events: n, valkeyCpuSeconds: 0 };
  }

  /**
   * The offline write alone: the same events as rows, written by the stream's OfflineSink into an embedded ClickHouse
   * of this process in batches of the stream's catch-up size (the engine's threads counted).
   */
  async offlineWrite(batch: number): Promise<Phase> {
    const ch = await tempOfflineStore();
    try {
      const sink = new OfflineSink(ch.client);
      const topics = sourceTopics(this.ns);
      const meter = await this.ctx.meter('offline-write');
      for (let b = 0; b < this.records.length; b += batch) {
        const impressions: ImpressionRow[] = [];
        const clicks: ClickRow[] = [];
        this.records.slice(b, b + batch).forEach(({ source, event }, i) => {
          const at = [topics[source], 0, b + i, event.event_time, 1, 'applied'] as const;
          if (source === 'impression') impressions.push(impressionRow(event as AdImpression, ...at));
          else clicks.push(clickRow(event as AdClick, ...at));
        });
        await sink.writeBatch(`b${b}`, { impressions, clicks, tiles: [] });
      }
      return { ...(await meter.stop()), events: this.records.length, valkeyCpuSeconds: 0 };
    } finally {
      await ch.close();
    }
  }

  /**
   * The engine with the online write alone: the same events (round robin over the stream's partitions, as
   * published) stepped by the stream's ValkeyStore in batches of `batch` per partition, each batch's touched parts
   * written to Valkey; no Kafka, no decode, no checkpoint. Its keys sit under the run's namespace.
   */
  async onlineWrite(batch: number): Promise<Phase & { parts: number }> {
    const features = new FeatureSet(DEFAULT_GROUPS);
    const client = new Valkey(SERVERS.valkey, { enableAutoPipelining: true, maxRetriesPerRequest: null });
    try {
      const store = new ValkeyStore(client, {
        features,
        namespace: `${this.ns}yardstick.`,
        ttlSeconds: Math.ceil(features.retentionMs / 1000) + 3600,
        retentionMs: 0,
      });
      let parts = 0;
      const write = store.writeParts.bind(store);
      store.writeParts = (keys, json, source, end) => {
        parts += keys.length;
        return write(keys, json, source, end);
      };
      const partitions = Array.from({ length: PARTITIONS }, (_, p) =>
        this.records.filter((_r, i) => i % PARTITIONS === p),
      );
      const phase = await this.measure('online-write', this.records.length, async () => {
        for (let b = 0; b < Math.max(...partitions.map((p) => p.length)); b += batch)
          for (const [p, records] of partitions.entries()) {
            const slice = records.slice(b, b + batch);
            if (slice.length === 0) continue;
            const horizon = (slice[0]?.event.event_time as number) - 3600_000;
            for (const source of ['impression', 'click'] as const) {
              const events = slice.filter((r) => r.source === source).map((r) => r.event as AdImpression | AdClick);
              if (events.length > 0)
                await store.applyBatch({ source, events }, `${source}/${p}`, b + slice.length, horizon);
            }
          }
      });
      return { ...phase, parts };
    } finally {
      client.disconnect();
    }
  }

  /**
   * The least a write of `n` parts can cost this process: 150-byte values set by a bare script, 1,000 hashes a
   * call, nothing built or encoded before (µs of CPU per part).
   */
  async bareWrite(n: number): Promise<number> {
    const client = new Valkey(SERVERS.valkey, { enableAutoPipelining: true, maxRetriesPerRequest: null });
    try {
      const script = "for i = 1, #KEYS do redis.call('HSET', KEYS[i], ARGV[1], ARGV[i + 1]) end return #KEYS";
      const keys = Array.from({ length: n }, (_, i) => `${this.ns}bare:{e${i}}`);
      const value = `{"o":100000,"n":{${'"ad_clicks_1h":[29500000,1]'.repeat(5)}}}`.padEnd(150, ' ');
      const call = (ks: string[]) => client.eval(script, ks.length, ...ks, 'impression/0', ...ks.map(() => value));
      const phase = await this.measure('bare-write', n, async () => {
        for (let b = 0; b < n; b += 1000) await call(keys.slice(b, b + 1000));
      });
      for (let b = 0; b < n; b += 10_000) await client.unlink(...keys.slice(b, b + 10_000));
      return (phase.cpuSeconds / n) * 1e6;
    } finally {
      client.disconnect();
    }
  }

  /** Deletes what the run made: the namespace's topics and consumer groups, its Valkey keys and checkpoints. */
  async tearDown(): Promise<void> {
    const kafka = async () => {
      await Promise.all([this.raw.disconnect(), this.probeProducer.disconnect()]); // the consumer waits out its fetch
      await withAdmin(this.kafka, SERVERS.kafka, async (admin) => {
        const groups = (await admin.listGroups()).groups.map((g) => g.groupId).filter((g) => g.startsWith(this.ns));
        if (groups.length > 0) await admin.deleteGroups(groups);
        await admin.deleteTopics({ topics: allTopics(this.ns) });
      });
    };
    const valkey = async () => {
      // One pass: the store's keys start with the namespace, the checkpoints' hash tags hold the group id.
      let cursor = '0';
      do {
        const [next, keys] = await this.valkey.scan(cursor, 'MATCH', `*${this.ns}*`, 'COUNT', 10_000);
        if (keys.length > 0) await this.valkey.unlink(...keys);
        cursor = next;
      } while (cursor !== '0');
    };
    const failed = (err: Error) => this.ctx.log(`clean-up: ${err.message}`);
    await Promise.all([kafka().catch(failed), valkey().catch(failed)]);
    this.valkey.disconnect();
  }
}

export const streamBench: Bench<'events' | 'latency-rate' | 'paced-rate' | 'latency-seconds' | 'max-batch'> = {
  name: 'stream',
  description: 'Kafka → decode → features → Valkey (+ ClickHouse), vs a kafkajs consumer that only counts',
  options: { events: 100_000, 'latency-rate': 200, 'paced-rate': 10_000, 'latency-seconds': 3, 'max-batch': 20_000 },
  async run(ctx) {
    const { events, 'latency-seconds': seconds, 'max-batch': maxBatch } = ctx.options;
    const rates = [ctx.options['latency-rate'], ctx.options['paced-rate']].filter((r) => r > 0);
    const b = new StreamBench(ctx, { rates, seconds, maxBatch });
    try {
      await b.setUp();
      ctx.log(`publishing ${events} events to ${SERVERS.kafka} under namespace ${b.ns}`);
      const publishRate = await b.publish(events);
      ctx.log('baseline: a consumer that only counts');
      const base = await b.baseline();
      const publish = (metric: string, value: number): Row => ({ benchmark: 'stream: publish', metric, value });
      const rows: Row[] = [
        publish('events', base.phase.events),
        publish('events/s (idempotent producer, acks=all)', publishRate),
        ...base.latency.flatMap((l) => [
          publish(`produce ack p50 ms @${l.rate}/s (paced)`, percentile(l.ack, 50)),
          publish(`produce ack p99 ms @${l.rate}/s (paced)`, percentile(l.ack, 99)),
        ]),
      ];
      ctx.log(
        'yardsticks: the replay engine, the offline write, the Avro decode and the online write alone, same events',
      );
      const engine = await b.engine();
      const offline = await b.offlineWrite(10_000);
      // After the offline write: its garbage would be collected during that measurement.
      const decode = await b.decode();
      const online = await b.onlineWrite(10_000);
      const bareUs = await b.bareWrite(online.parts);
      const partsPerEvent = online.parts / online.events;
      const usPerEvent = (p: Phase) => (p.cpuSeconds / p.events) * 1e6;
      const yardstick = (metric: string, value: number, baseline?: number): Row => ({
        benchmark: 'stream: yardsticks',
        metric,
        value,
        baseline,
      });
      const enginePerCpuS = engine.events / engine.cpuSeconds;
      // What a stream with Valkey + ClickHouse could reach at best: only the costs it cannot leave out, each measured
      // alone here (no Valkey write, no checkpoint, no tile rows counted).
      const floorUs = usPerEvent(base.phase) + usPerEvent(decode) + 1e6 / enginePerCpuS + usPerEvent(offline);
      // The same with the online write: the engine as the stream runs it, with its parts written to Valkey.
      const withOnlineUs = usPerEvent(base.phase) + usPerEvent(decode) + usPerEvent(online) + usPerEvent(offline);
      rows.push(
        yardstick('replay engine, same events in memory: events per CPU-second', enginePerCpuS),
        yardstick('counting consumer: µs CPU per event', usPerEvent(base.phase)),
        yardstick('Avro decode alone (wire bytes → events): µs CPU per event', usPerEvent(decode)),
        yardstick('offline write alone (rows → embedded ClickHouse): µs CPU per event', usPerEvent(offline)),
        yardstick(
          'consume + decode + engine + offline write: events per CPU-second vs the engine',
          1e6 / floorUs,
          enginePerCpuS,
        ),
        yardstick('engine + online write alone (rings → parts → Valkey): µs CPU per event', usPerEvent(online)),
        yardstick(
          'engine + online write alone: Valkey server µs CPU per event',
          (online.valkeyCpuSeconds / online.events) * 1e6,
        ),
        yardstick(
          'engine + online write alone: parts written per event (batches of 10,000 per partition)',
          partsPerEvent,
        ),
        yardstick('bare write of as many parts (a script, 1,000 per call): µs CPU per part', bareUs),
        yardstick(
          'consume + decode + engine + offline write + bare writes of the parts: events per CPU-second vs the engine',
          1e6 / (floorUs + partsPerEvent * bareUs),
          enginePerCpuS,
        ),
        yardstick(
          'consume + decode + engine + online write + offline write: events per CPU-second vs the engine',
          1e6 / withOnlineUs,
          enginePerCpuS,
        ),
      );
      const details: Record<string, unknown> = {
        namespace: b.ns,
        publishRate,
        baseline: base,
        engine,
        decode,
        offline,
      };
      for (const v of VARIANTS) {
        const run = await b.stream(v);
        rows.push(...variantRows(v.name, run, base, engine));
        details[v.key] = run;
      }
      return { rows, details };
    } finally {
      ctx.log('deleting the topics and keys of the run');
      await b.tearDown();
    }
  },
};

/** The stream's numbers beside the counting consumer's: throughput, CPU, memory; Valkey visibility vs delivery. */
function variantRows(name: string, { phase: run, latency, batches }: StreamRun, base: Run, engine: Phase): Row[] {
  const b = base.phase;
  const row = (metric: string, value: number, baseline?: number): Row => ({ benchmark: name, metric, value, baseline });
  return [
    row('events/s (wall clock)', run.events / run.seconds, b.events / b.seconds),
    row('events per CPU-second', run.events / run.cpuSeconds, b.events / b.cpuSeconds),
    row('events per CPU-second vs the replay engine', run.events / run.cpuSeconds, engine.events / engine.cpuSeconds),
    row('CPU cores busy (CPU-s / wall-s)', run.cpuSeconds / run.seconds, b.cpuSeconds / b.seconds),
    row('Valkey server CPU cores busy', run.valkeyCpuSeconds / run.seconds),
    row('Valkey server µs CPU per event', (run.valkeyCpuSeconds / run.events) * 1e6),
    row('Valkey data MB per million events (its growth)', ((run.valkeyBytes ?? 0) / 2 ** 20) * (1e6 / run.events)),
    row('peak RSS MB', run.peakRssMB, b.peakRssMB),
    row('catch-up: events per batch', run.events / batches.throughput.count),
    row('catch-up: ms per batch (fetch → checkpoint)', batches.throughput.ms / batches.throughput.count),
    ...latency.flatMap((l, i) => {
      const d = (base.latency[i] as Latency).delivered;
      return [50, 99, 99.9].map((p) =>
        row(`latency p${p} ms @${l.rate}/s: send → in Valkey`, percentile(l.visible, p), percentile(d, p)),
      );
    }),
    row('latency phase: ms per batch', batches.latency.ms / batches.latency.count),
  ];
}
