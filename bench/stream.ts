// The streaming benchmark. Under a fresh namespace (3 partitions) it publishes a generated log, then measures:
// - baseline: a kafkajs consumer group with StreamService's consumer settings that only counts messages;
// - the real StreamService, wired as `tributary stream` wires it (ValkeyStore, ValkeyCheckpoints, StreamMetrics,
//   OfflineSink on the embedded ClickHouse in a temp dir), once without and once with the offline sink.
// Throughput is wall-clock events/s from the moment the group has joined until every event is processed (the
// service's `processed` counter, polled every 2 ms), events per CPU-second of this whole process (all threads,
// the embedded ClickHouse's included), and the Valkey server's CPU time over the same interval (INFO cpu).
//
// Latency, once a consumer is caught up: fresh copies of generated impressions (event_time now), paced at
// --latency-rate/s, each sent on its own. An event is online when its ad's hash in Valkey carries the
// source-partition marker "@<topic>/<partition>" at or past the event's offset (known from the produce ack): the
// store sets it in the same Lua call that applies the batch's tiles to that entity. A poller HGETs every pending
// marker each millisecond (pipelined, on its own connection), so a sample is late by at most ~1 ms plus a round
// trip. The baseline is delivery to the counting consumer, measured alone before the services start. All from
// just before send().
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Valkey } from 'iovalkey';
import pino from 'pino';
import { allTopics } from '../src/events/catalog.ts';
import { generate } from '../src/events/generator.ts';
import { createRegistryClient } from '../src/events/registry.ts';
import { EventSerde } from '../src/events/serde.ts';
import { type AdImpression, EVENT_KINDS } from '../src/events/types.ts';
import { FeatureSet } from '../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../src/features/definitions.ts';
import { entities, entityKey } from '../src/features/entities.ts';
import { createKafka, ensureTopics, withAdmin } from '../src/kafka/client.ts';
import { KafkaEventLog, KafkaLogProducer } from '../src/kafka/event-log.ts';
import { EventPublisher } from '../src/kafka/publish.ts';
import { openClickHouse } from '../src/offline/clickhouse.ts';
import { ensureOfflineSchema } from '../src/offline/schema.ts';
import { OfflineSink } from '../src/offline/sink.ts';
import { ValkeyStore } from '../src/online/valkey-store.ts';
import { ValkeyCheckpoints } from '../src/streams/checkpoint.ts';
import { StreamMetrics } from '../src/streams/metrics.ts';
import { sourceTopics } from '../src/streams/processor.ts';
import { StreamService } from '../src/streams/service.ts';
import { type Bench, type BenchContext, type Measured, percentile, type Row, SERVERS, sleep, until } from './lib.ts';

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
  { key: 'online', name: 'stream: Valkey', offline: false },
  { key: 'full', name: 'stream: Valkey+ClickHouse', offline: true },
] as const;

interface Latency {
  /** ms from send() to: the produce ack, the counting consumer's delivery, the ad's marker visible in Valkey. */
  ack: number[];
  delivered: number[];
  visible: number[];
}

interface Settings {
  /** Latency probes: how many, sent at what rate (per second). */
  rate: number;
  count: number;
  maxBatch: number;
}

interface Phase extends Measured {
  events: number;
  /** CPU time the Valkey server used meanwhile (INFO cpu: all its clients, not just ours). */
  valkeyCpuSeconds: number;
}

type Run = { phase: Phase; latency: Latency };
/** Batches the service finished (its batch_seconds histogram): how many, total ms. */
type BatchStats = { count: number; ms: number };
type StreamRun = Run & { batches: { throughput: BatchStats; latency: BatchStats } };

/** Resolves each wait when a hash field reaches an offset: while any wait is pending, one pipelined round of
 * HGETs per millisecond. Rejects a wait after `timeoutMs`. */
class MarkerPoller {
  private readonly pending = new Set<{ key: string; field: string; offset: number; deadline: number; done: Settle }>();
  private polling = false;

  constructor(
    private readonly client: Valkey,
    private readonly timeoutMs = 30_000,
  ) {}

  wait(key: string, field: string, offset: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const deadline = performance.now() + this.timeoutMs;
      this.pending.add({ key, field, offset, deadline, done: { resolve, reject } });
      if (!this.polling) void this.poll();
    });
  }

  private async poll(): Promise<void> {
    this.polling = true;
    while (this.pending.size > 0) {
      const round = [...this.pending];
      const values = await Promise.all(round.map((p) => this.client.hget(p.key, p.field).catch(() => null)));
      const now = performance.now();
      round.forEach((p, i) => {
        const v = values[i];
        if (v != null && Number(v) >= p.offset) p.done.resolve(now);
        else if (now > p.deadline) p.done.reject(new Error(`${p.key} ${p.field} never reached offset ${p.offset}`));
        else return;
        this.pending.delete(p);
      });
      await sleep(1);
    }
    this.polling = false;
  }
}

type Settle = { resolve: (t: number) => void; reject: (e: Error) => void };

class StreamBench {
  readonly ns = `bench${Date.now()}.`;
  private readonly kafka = createKafka(SERVERS.kafka, 'tributary-bench');
  private readonly serde = new EventSerde(createRegistryClient(SERVERS.registry));
  private readonly features = new FeatureSet(DEFAULT_GROUPS);
  private readonly log = pino({ level: 'warn' }, pino.destination(2));
  private readonly valkey = new Valkey(SERVERS.valkey, { enableAutoPipelining: true });
  private readonly poller = new MarkerPoller(this.valkey);
  private readonly probeProducer = this.kafka.producer();
  /** The baseline group; it keeps running to time the delivery of latency probes. */
  private readonly raw = this.kafka.consumer({ groupId: `${this.ns}raw`, ...CONSUMER_SETTINGS });
  private counted = 0;
  private readonly delivered = new Map<string, number>();
  private watching = false;
  /** Messages in the source topics so far. */
  private published = 0;
  private templates: AdImpression[] = [];

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
  async baseline(): Promise<{ phase: Phase; latency: Latency }> {
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
    this.ctx.log(`baseline: latency of ${this.settings.count} single events at ${this.settings.rate}/s`);
    return { phase, latency: await this.latency('raw') };
  }

  /** The service as `tributary stream` wires it, under its own Valkey keys and group: it starts from nothing. */
  async stream(variant: (typeof VARIANTS)[number]): Promise<StreamRun> {
    const vns = `${this.ns}${variant.key}.`;
    const client = new Valkey(SERVERS.valkey, { enableAutoPipelining: true, maxRetriesPerRequest: null });
    const online = new ValkeyStore(client, {
      features: this.features,
      namespace: vns,
      ttlSeconds: Math.ceil((this.features.retentionMs + LATENESS_MS) / 1000),
      retentionMs: this.features.retentionMs,
    });
    const offline = variant.offline ? await openOffline() : undefined;
    const serde = new EventSerde(createRegistryClient(SERVERS.registry));
    await serde.prepare(EVENT_KINDS);
    const metrics = new StreamMetrics();
    const service = new StreamService(
      {
        eventLog: new KafkaEventLog(this.kafka, SERVERS.kafka),
        serde,
        features: this.features,
        online,
        offline: offline?.sink,
        checkpoints: new ValkeyCheckpoints(client, vns),
        metrics,
        log: this.log,
      },
      { namespace: this.ns, groupId: vns, allowedLatenessMs: LATENESS_MS, maxBatch: this.settings.maxBatch },
    );
    try {
      await service.start();
      const events = this.published;
      this.ctx.log(`${variant.name}: consuming ${events} events`);
      // A stream that stopped on a permanent failure ends the run with its reason, not a 300 s wait.
      const stopped = service.failed.then((err) => Promise.reject(err));
      stopped.catch(() => undefined);
      const phase = await this.measure(variant.key, events, () =>
        Promise.race([
          until(`${variant.name} to process ${events} events`, () => service.processed >= events, 300_000),
          stopped,
        ]),
      );
      const batches = await batchStats(metrics);
      this.ctx.log(`${variant.name}: latency of ${this.settings.count} single events at ${this.settings.rate}/s`);
      const latency = await this.latency(variant.key, (e) => online.entityHash(entityKey(entities.ad, e)));
      const all = await batchStats(metrics);
      return {
        phase,
        latency,
        batches: { throughput: batches, latency: { count: all.count - batches.count, ms: all.ms - batches.ms } },
      };
    } finally {
      await service.stop();
      client.disconnect();
      await offline?.close();
    }
  }

  private async measure(label: string, events: number, run: () => Promise<void>): Promise<Phase> {
    const valkeyCpu0 = await this.valkeyCpu();
    const meter = await this.ctx.meter(label);
    await run();
    const m = await meter.stop();
    return { ...m, events, valkeyCpuSeconds: (await this.valkeyCpu()) - valkeyCpu0 };
  }

  private async valkeyCpu(): Promise<number> {
    const info = await this.valkey.info('cpu');
    const seconds = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? 0);
    return seconds('used_cpu_user') + seconds('used_cpu_sys');
  }

  /**
   * Fresh copies of generated impressions, event_time now, sent one by one at the probe rate. With `writtenHash` (a
   * Valkey hash the impression's batch writes), also waits for each to be applied in Valkey.
   */
  private async latency(label: string, writtenHash?: (e: AdImpression) => string): Promise<Latency> {
    const { rate, count } = this.settings;
    const out: Latency = { ack: [], delivered: [], visible: [] };
    const topic = sourceTopics(this.ns).impression;
    this.delivered.clear();
    this.watching = true;
    const t0 = performance.now();
    const probe = async (i: number) => {
      await sleep(t0 + (i * 1000) / rate - performance.now());
      const template = this.templates[i % this.templates.length] as AdImpression;
      const event = { ...template, event_id: `${label}-${i}`, event_time: Date.now() };
      const sent = performance.now();
      const [meta] = await this.probeProducer.send({
        topic,
        acks: -1,
        messages: [{ key: event.user_id, value: this.serde.encode('impression', event) }],
      });
      out.ack.push(performance.now() - sent);
      const id = `${topic}/${meta?.partition}`;
      const offset = Number(meta?.baseOffset);
      if (writtenHash) {
        const visible = await this.poller.wait(writtenHash(event), `@${id}`, offset);
        out.visible.push(visible - sent);
      }
      await until('the counting consumer to get a probe', () => this.delivered.has(`${id}@${offset}`), 10_000);
      out.delivered.push((this.delivered.get(`${id}@${offset}`) as number) - sent);
    };
    await Promise.all(Array.from({ length: count }, (_, i) => probe(i)));
    this.watching = false;
    this.published += count;
    return out;
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

export const streamBench: Bench<'events' | 'latency-rate' | 'latency-seconds' | 'max-batch'> = {
  name: 'stream',
  description: 'Kafka → decode → features → Valkey (+ ClickHouse), vs a kafkajs consumer that only counts',
  options: { events: 100_000, 'latency-rate': 200, 'latency-seconds': 3, 'max-batch': 5000 },
  async run(ctx) {
    const { events, 'latency-rate': rate, 'latency-seconds': seconds, 'max-batch': maxBatch } = ctx.options;
    const b = new StreamBench(ctx, { rate, count: Math.round(rate * seconds), maxBatch });
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
        publish('produce ack p50 ms (single event)', percentile(base.latency.ack, 50)),
        publish('produce ack p99 ms (single event)', percentile(base.latency.ack, 99)),
      ];
      const details: Record<string, unknown> = { namespace: b.ns, publishRate, baseline: base };
      for (const v of VARIANTS) {
        const run = await b.stream(v);
        rows.push(...variantRows(v.name, run, base));
        details[v.key] = run;
      }
      return { rows, details };
    } finally {
      ctx.log('deleting the topics and keys of the run');
      await b.tearDown();
    }
  },
};

/** The histogram's batch count and total ms so far. */
async function batchStats(metrics: StreamMetrics): Promise<BatchStats> {
  const { values } = await metrics.batchSeconds.get();
  const of = (name: string) => values.find((v) => v.metricName === name)?.value ?? 0;
  return { count: of('tributary_stream_batch_seconds_count'), ms: of('tributary_stream_batch_seconds_sum') * 1000 };
}

/** The stream's numbers beside the counting consumer's: throughput, CPU, memory; Valkey visibility vs delivery. */
function variantRows(name: string, { phase: run, latency, batches }: StreamRun, base: Run): Row[] {
  const b = base.phase;
  const row = (metric: string, value: number, baseline?: number): Row => ({ benchmark: name, metric, value, baseline });
  return [
    row('events/s (wall clock)', run.events / run.seconds, b.events / b.seconds),
    row('events per CPU-second', run.events / run.cpuSeconds, b.events / b.cpuSeconds),
    row('CPU cores busy (CPU-s / wall-s)', run.cpuSeconds / run.seconds, b.cpuSeconds / b.seconds),
    row('Valkey server CPU cores busy', run.valkeyCpuSeconds / run.seconds),
    row('peak RSS MB', run.peakRssMB, b.peakRssMB),
    row('catch-up: events per batch', run.events / batches.throughput.count),
    row('catch-up: ms per batch (fetch → checkpoint)', batches.throughput.ms / batches.throughput.count),
    row('latency p50 ms: send → in Valkey', percentile(latency.visible, 50), percentile(base.latency.delivered, 50)),
    row('latency p99 ms: send → in Valkey', percentile(latency.visible, 99), percentile(base.latency.delivered, 99)),
    row('latency phase: ms per batch', batches.latency.ms / batches.latency.count),
  ];
}

/** The embedded ClickHouse in a temp dir, with the offline schema, as `tributary stream` opens it. */
async function openOffline() {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-ch-'));
  const client = await openClickHouse({ dir });
  await ensureOfflineSchema(client);
  return {
    sink: new OfflineSink(client),
    close: async () => {
      await client.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
