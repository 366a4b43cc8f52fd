// The stream under measurement, in a process of its own (forked by bench/stream.ts), wired as `tributary stream`
// wires it (streams/open.ts): ValkeyStore, ValkeyCheckpoints, StreamMetrics, and with `offline` an OfflineSink on
// the embedded ClickHouse in a temp dir. Its own process so that its CPU, memory and event loop are its own: the
// bench's producer and probes run beside it, as other processes would. It reports over IPC when Valkey acknowledged
// each batch's write (epoch ms), how far it got, and what a phase cost it.
import pino from 'pino';
import { createRegistryClient } from '../src/events/registry.ts';
import { EventSerde } from '../src/events/serde.ts';
import { EVENT_KINDS } from '../src/events/types.ts';
import { FeatureSet } from '../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../src/features/definitions.ts';
import { createKafka } from '../src/kafka/client.ts';
import { KafkaEventLog } from '../src/kafka/event-log.ts';
import { OfflineSink } from '../src/offline/sink.ts';
import { connectValkey } from '../src/online/connect.ts';
import type { TileWriter } from '../src/online/contract.ts';
import type { AdmittedEvents } from '../src/online/part-writer.ts';
import { ValkeyStore } from '../src/online/valkey-store.ts';
import { ValkeyCheckpoints } from '../src/streams/checkpoint.ts';
import { StreamMetrics } from '../src/streams/metrics.ts';
import { StreamService } from '../src/streams/service.ts';
import { Meter, SERVERS, tempOfflineStore } from './lib.ts';

/** What the bench asks of the stream process. */
export type ToStream =
  | {
      type: 'start';
      namespace: string;
      groupId: string;
      /** Whether it writes Valkey (else only ClickHouse, as `tributary stream --no-online`). */
      online: boolean;
      offline: boolean;
      maxBatch: number;
      latenessMs: number;
      /** Where the log and the online store are (default: SERVERS' single nodes). */
      kafka?: string[];
      valkey?: string;
    }
  | { type: 'meter'; label: string; profileDir?: string }
  | { type: 'measure' }
  | { type: 'reach'; events: number }
  | { type: 'processed' }
  | { type: 'batches' }
  | { type: 'stop' };

/** What it answers; `written` is sent unasked, after each batch Valkey acknowledged. */
export type FromStream =
  | { type: 'started' }
  | { type: 'metered' }
  | { type: 'measured'; seconds: number; cpuSeconds: number; peakRssMB: number }
  | { type: 'reached' }
  | { type: 'processed'; events: number }
  | { type: 'batches'; count: number; ms: number }
  | { type: 'written'; source: string; offset: number; at: number }
  | { type: 'failed'; message: string }
  | { type: 'stopped' };

const send = (m: FromStream) => process.send?.(m);
/** Epoch ms with sub-ms precision: comparable with the bench process's clock. */
const now = () => performance.timeOrigin + performance.now();

/** Tells the bench when each batch's write was acknowledged by Valkey. */
class ReportWrites implements TileWriter {
  constructor(private readonly store: TileWriter) {}

  async applyBatch(batch: AdmittedEvents, source: string, endOffset: number, horizon?: number): Promise<void> {
    await this.store.applyBatch(batch, source, endOffset, horizon);
    send({ type: 'written', source, offset: endOffset, at: now() });
  }

  forget(source: string): void {
    this.store.forget(source);
  }
}

let service: StreamService | undefined;
let metrics: StreamMetrics | undefined;
let meter: Meter | undefined;
const closers: (() => Promise<void> | void)[] = [];

async function start(m: Extract<ToStream, { type: 'start' }>) {
  const features = new FeatureSet(DEFAULT_GROUPS);
  const client = await connectValkey(m.valkey ?? SERVERS.valkey, {
    enableAutoPipelining: true,
    maxRetriesPerRequest: null,
  });
  closers.push(() => client.disconnect());
  const store = new ValkeyStore(client, {
    features,
    namespace: m.groupId,
    ttlSeconds: Math.ceil((features.retentionMs + m.latenessMs) / 1000),
    // As `tributary stream` keeps it (streams/open.ts): the present only.
    retentionMs: 0,
  });
  let offline: OfflineSink | undefined;
  if (m.offline) {
    const ch = await tempOfflineStore();
    offline = new OfflineSink(ch.client);
    closers.push(ch.close);
  }
  const serde = new EventSerde(createRegistryClient(SERVERS.registry));
  await serde.prepare(EVENT_KINDS);
  metrics = new StreamMetrics();
  service = new StreamService(
    {
      eventLog: new KafkaEventLog(
        createKafka(m.kafka ?? SERVERS.kafka, 'tributary-bench-stream'),
        m.kafka ?? SERVERS.kafka,
      ),
      serde,
      features,
      online: m.online ? new ReportWrites(store) : undefined,
      offline,
      checkpoints: new ValkeyCheckpoints(client, m.groupId),
      metrics,
      log: pino({ level: 'warn' }, pino.destination(2)),
    },
    {
      namespace: m.namespace,
      groupId: m.groupId,
      allowedLatenessMs: m.latenessMs,
      maxBatch: m.maxBatch,
      sendDeadLetters: m.online,
    },
  );
  service.failed.then((err) => send({ type: 'failed', message: err.message }));
  await service.start();
}

async function batches() {
  const { values } = await (metrics as StreamMetrics).batchSeconds.get();
  const of = (name: string) => values.find((v) => v.metricName === name)?.value ?? 0;
  return { count: of('tributary_stream_batch_seconds_count'), ms: of('tributary_stream_batch_seconds_sum') * 1000 };
}

process.on('message', async (m: ToStream) => {
  try {
    switch (m.type) {
      case 'start':
        await start(m);
        return send({ type: 'started' });
      case 'meter':
        meter = await Meter.start(m.label, m.profileDir);
        return send({ type: 'metered' });
      case 'measure':
        return send({ type: 'measured', ...(await (meter as Meter).stop()) });
      case 'reach': {
        // Polled here, not over IPC: the phase ends within 2 ms of the last event's batch.
        const s = service as StreamService;
        while (s.processed < m.events) await new Promise((r) => setTimeout(r, 2));
        return send({ type: 'reached' });
      }
      case 'processed':
        return send({ type: 'processed', events: service?.processed ?? 0 });
      case 'batches':
        return send({ type: 'batches', ...(await batches()) });
      case 'stop':
        await service?.stop();
        for (const close of closers) await close();
        send({ type: 'stopped' });
        return process.disconnect();
    }
  } catch (err) {
    send({ type: 'failed', message: (err as Error).message });
  }
});
