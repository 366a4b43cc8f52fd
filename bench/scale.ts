// The scale-out benchmark: the same generated events through the stream (Valkey only, as `tributary stream
// --no-offline` runs it) on the single-node set-up (one Kafka broker, one Valkey) and on the cluster set-up (three
// brokers with topics replicated 3 times, min.insync.replicas 2; a Valkey Cluster of three masters with a replica
// each), first one stream process, then two in one group; each cluster figure beside the single node's of the same
// run. Wall time runs from the first process up to the last event processed (CPU time includes starting). It also measures what deploy/README.md's sizing
// table is computed from: publish rate, Valkey bytes per entity hash and hashes per event, ClickHouse bytes per
// event (the embedded engine's tables, compressed, as the sink writes them).
import type { Cluster, Redis } from 'iovalkey';
import { allTopics } from '../src/events/catalog.ts';
import { generate } from '../src/events/generator.ts';
import { createRegistryClient } from '../src/events/registry.ts';
import { EventSerde } from '../src/events/serde.ts';
import { type AdClick, type AdImpression, EVENT_KINDS } from '../src/events/types.ts';
import { createKafka, ensureTopics, withAdmin } from '../src/kafka/client.ts';
import { KafkaLogProducer } from '../src/kafka/event-log.ts';
import { EventPublisher } from '../src/kafka/publish.ts';
import { type ClickRow, type ImpressionRow, OfflineSink } from '../src/offline/sink.ts';
import { connectValkey } from '../src/online/connect.ts';
import { clickRow, impressionRow, sourceTopics } from '../src/streams/processor.ts';
import { type Bench, type BenchContext, type Row, SERVERS, sleep, tempOfflineStore } from './lib.ts';
import { StreamProcess } from './stream.ts';
import type { ToStream } from './stream-process.ts';

const LATENESS_MS = 3600_000;

const SETUPS = [
  { key: 'single', name: 'Kafka ×1 + Valkey node', kafka: SERVERS.kafka, valkey: SERVERS.valkey },
  {
    key: 'cluster',
    name: 'Kafka ×3 (RF 3) + Valkey Cluster ×3',
    kafka: SERVERS.kafkaCluster,
    valkey: SERVERS.valkeyCluster,
  },
] as const;

interface StreamFigures {
  processes: number;
  seconds: number;
  cpuSeconds: number;
  valkeyCpuSeconds: number;
  valkeyBytes: number;
  keys: number;
}

/** Every node holding data: a single node, or a Cluster's masters. */
const nodesOf = (c: Redis | Cluster) => (c.isCluster ? (c as Cluster).nodes('master') : [c as Redis]);

async function sumInfo(c: Redis | Cluster, section: string, fields: string[]): Promise<number> {
  let total = 0;
  for (const node of nodesOf(c)) {
    const info = await node.info(section);
    for (const f of fields) total += Number(new RegExp(`^${f}:([\\d.]+)`, 'm').exec(info)?.[1] ?? 0);
  }
  return total;
}

const usedMemory = (c: Redis | Cluster) => sumInfo(c, 'memory', ['used_memory']);
const usedCpu = (c: Redis | Cluster) => sumInfo(c, 'cpu', ['used_cpu_user', 'used_cpu_sys']);
const keyCount = async (c: Redis | Cluster) => {
  let n = 0;
  for (const node of nodesOf(c)) n += await node.dbsize();
  return n;
};

async function dropMatching(c: Redis | Cluster, pattern: string): Promise<void> {
  for (const node of nodesOf(c)) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 10_000);
      // One key a call: on a cluster a call's keys must share a slot.
      await Promise.all(keys.map((k) => node.unlink(k)));
      cursor = next;
    } while (cursor !== '0');
  }
}

/** `processes` stream processes in one group over the namespace's events until all are processed. */
async function runStream(
  ctx: BenchContext,
  setup: (typeof SETUPS)[number],
  valkey: Redis | Cluster,
  ns: string,
  events: number,
  processes: number,
  maxBatch: number,
): Promise<StreamFigures> {
  const groupId = `${ns}g${processes}.`;
  const all = Array.from({ length: processes }, () => new StreamProcess());
  try {
    const start: ToStream = {
      type: 'start',
      namespace: ns,
      groupId,
      online: true,
      offline: false,
      maxBatch,
      latenessMs: LATENESS_MS,
      kafka: [...setup.kafka],
      valkey: setup.valkey,
    };
    const [bytes0, keys0, cpu0] = [await usedMemory(valkey), await keyCount(valkey), await usedCpu(valkey)];
    // Metered from before the start (CPU includes joining the group), timed from the first event processed (a
    // process consumes as soon as it has joined, before the others have).
    await Promise.all(
      all.map((p, i) => p.ask({ type: 'meter', label: `scale-${setup.key}-${processes}-${i}` }, 'metered')),
    );
    // Timed from the first process up (it consumes at once, while the others are still joining).
    let first: number | undefined;
    const started = Promise.all(
      all.map((p) =>
        p.ask(start, 'started').then(() => {
          first ??= performance.now();
        }),
      ),
    );
    for (;;) {
      const done = (await Promise.all(all.map((p) => p.ask({ type: 'processed' }, 'processed')))).reduce(
        (n, d) => n + d.events,
        0,
      );
      if (done >= events) break;
      await sleep(5);
    }
    const seconds = (performance.now() - (first as number)) / 1000;
    await started;
    const measured = await Promise.all(all.map((p) => p.ask({ type: 'measure' }, 'measured')));
    const figures = {
      processes,
      seconds,
      cpuSeconds: measured.reduce((t, m) => t + m.cpuSeconds, 0),
      valkeyCpuSeconds: (await usedCpu(valkey)) - cpu0,
      valkeyBytes: (await usedMemory(valkey)) - bytes0,
      keys: (await keyCount(valkey)) - keys0,
    };
    ctx.log(`${setup.name}, ${processes} process(es): ${Math.round(events / figures.seconds)} events/s`);
    return figures;
  } finally {
    await Promise.all(all.map((p) => p.stop()));
  }
}

export const scaleBench: Bench<'events' | 'partitions' | 'max-batch'> = {
  name: 'scale',
  description: 'the stream on one broker + one Valkey vs three brokers + a Valkey Cluster; the sizing figures',
  options: { events: 200_000, partitions: 6, 'max-batch': 20_000 },
  async run(ctx) {
    const { events, partitions, 'max-batch': maxBatch } = ctx.options;
    const serde = new EventSerde(createRegistryClient(SERVERS.registry));
    await serde.prepare(EVENT_KINDS);
    const days = 3;
    const log = generate({ start: Date.now() - days * 86400_000, days, impressionsPerDay: Math.ceil(events / days) })
      .filter((r) => r.record.kind === 'impression' || r.record.kind === 'click')
      .slice(0, events);
    const rows: Row[] = [];
    const details: Record<string, unknown> = {};
    const single: Record<string, number> = {};
    for (const setup of SETUPS) {
      const ns = `scale${Date.now()}${setup.key}.`;
      const kafka = createKafka([...setup.kafka], 'tributary-bench');
      const valkey = await connectValkey(setup.valkey, {});
      const row = (metric: string, value: number): Row => {
        if (setup.key === 'single') single[metric] = value;
        return { benchmark: `scale: ${setup.name}`, metric, value, baseline: single[metric] };
      };
      try {
        await withAdmin(kafka, [...setup.kafka], (admin) => ensureTopics(admin, allTopics(ns), partitions));
        ctx.log(`${setup.name}: publishing ${log.length} events under ${ns} (${partitions} partitions)`);
        const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
        await producer.connect();
        const t0 = performance.now();
        const publisher = new EventPublisher(new KafkaLogProducer(producer), serde, ns);
        for (const r of log) await publisher.add(r);
        await publisher.flush();
        const publishSeconds = (performance.now() - t0) / 1000;
        await producer.disconnect();
        rows.push(row('publish events/s (idempotent, acks=all)', log.length / publishSeconds));
        const runs: StreamFigures[] = [];
        for (const processes of [1, 2]) {
          const f = await runStream(ctx, setup, valkey, ns, log.length, processes, maxBatch);
          runs.push(f);
          const p = `${processes} stream process${processes > 1 ? 'es' : ''}`;
          rows.push(
            row(`${p}: events/s (wall clock)`, log.length / f.seconds),
            row(`${p}: events per stream CPU-second`, log.length / f.cpuSeconds),
            row(`${p}: Valkey server µs CPU per event (all masters)`, (f.valkeyCpuSeconds / log.length) * 1e6),
          );
        }
        const first = runs[0] as StreamFigures;
        rows.push(
          row('Valkey bytes per entity hash (used_memory growth / keys)', first.valkeyBytes / first.keys),
          row('Valkey entity hashes per event (this traffic, 3 days)', first.keys / log.length),
        );
        details[setup.key] = { namespace: ns, publishSeconds, runs };
      } finally {
        await withAdmin(kafka, [...setup.kafka], async (admin) => {
          const groups = (await admin.listGroups()).groups.map((g) => g.groupId).filter((g) => g.startsWith(ns));
          if (groups.length > 0) await admin.deleteGroups(groups);
          await admin.deleteTopics({ topics: allTopics(ns) });
        }).catch((err: Error) => ctx.log(`clean-up: ${err.message}`));
        await dropMatching(valkey, `*${ns}*`).catch((err: Error) => ctx.log(`clean-up: ${err.message}`));
        valkey.disconnect();
      }
    }
    rows.push(...(await clickHouseBytes(log, 10_000)));
    return { rows, details };
  },
};

/** The offline tables' size on disk per event, the events written by the sink in batches as the stream writes. */
async function clickHouseBytes(log: ReturnType<typeof generate>, batch: number): Promise<Row[]> {
  const ch = await tempOfflineStore();
  try {
    const sink = new OfflineSink(ch.client);
    const topics = sourceTopics('scale.');
    for (let b = 0; b < log.length; b += batch) {
      const impressions: ImpressionRow[] = [];
      const clicks: ClickRow[] = [];
      log.slice(b, b + batch).forEach(({ record }, i) => {
        const at = [
          topics[record.kind as 'impression' | 'click'],
          0,
          b + i,
          record.event.event_time,
          1,
          'applied',
        ] as const;
        if (record.kind === 'impression') impressions.push(impressionRow(record.event as AdImpression, ...at));
        else clicks.push(clickRow(record.event as AdClick, ...at));
      });
      await sink.writeBatch(`b${b}`, { impressions, clicks, tiles: [] });
    }
    await ch.client.command({ query: 'OPTIMIZE TABLE impressions FINAL' });
    await ch.client.command({ query: 'OPTIMIZE TABLE clicks FINAL' });
    const rs = await ch.client.query({
      query: `SELECT sum(bytes_on_disk) AS bytes, sum(data_uncompressed_bytes) AS raw FROM system.parts
              WHERE active AND database = currentDatabase() AND table IN ('impressions', 'clicks')`,
      format: 'JSONEachRow',
    });
    const [{ bytes, raw }] = (await rs.json()) as [{ bytes: string; raw: string }];
    const row = (metric: string, value: number): Row => ({ benchmark: 'scale: ClickHouse (embedded)', metric, value });
    return [
      row('bytes on disk per event (impressions + clicks, compressed)', Number(bytes) / log.length),
      row('bytes per event uncompressed', Number(raw) / log.length),
    ];
  } finally {
    await ch.close();
  }
}
