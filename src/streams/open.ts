// The stream service wired to what the configuration names: Kafka or the file log, Valkey or the in-process
// online store, a ClickHouse server or the embedded engine. Used by `tributary stream` and the demo alike.
import type { ClickHouseClient } from '@clickhouse/client';
import type { Cluster, Valkey } from 'iovalkey';
import type { Logger } from 'pino';
import { type Config, ConfigError } from '../config/config.ts';
import { unreachable } from '../config/unreachable.ts';
import { allTopics } from '../events/catalog.ts';
import { createRegistryClient } from '../events/registry.ts';
import { EventSerde } from '../events/serde.ts';
import { EVENT_KINDS } from '../events/types.ts';
import type { FeatureSet } from '../features/compile.ts';
import { createKafka } from '../kafka/client.ts';
import { KafkaEventLog } from '../kafka/event-log.ts';
import { FileEventLog } from '../log/file-event-log.ts';
import { clearStreamTables, ensureOfflineSchema } from '../offline/schema.ts';
import { OfflineSink } from '../offline/sink.ts';
import { connectValkey } from '../online/connect.ts';
import type { FeatureReader } from '../online/contract.ts';
import { MemoryStore } from '../online/memory-store.ts';
import { ValkeyStore } from '../online/valkey-store.ts';
import { type CheckpointStore, MemoryCheckpoints, ValkeyCheckpoints } from './checkpoint.ts';
import type { EventLog } from './event-log.ts';
import { StreamMetrics } from './metrics.ts';
import { sourceTopics } from './processor.ts';
import { partitionProgress } from './progress.ts';
import { StreamService } from './service.ts';

/** Kafka when brokers are configured, else the file log at `config.logDir`. */
export function openEventLog(config: Config, log?: Logger, clientId = 'tributary'): EventLog {
  return config.kafka.length > 0
    ? new KafkaEventLog(createKafka(config.kafka, clientId), config.kafka)
    : new FileEventLog(config.logDir, log);
}

/**
 * The schema registry at `config.schemaRegistry`, else the in-memory one. In-memory ids are the same in every
 * process (the schemas are registered in one fixed order), so a file log written by one process decodes in another.
 */
export async function openSerde(config: Config): Promise<EventSerde> {
  if (config.schemaRegistry) {
    // The registry client retries for half a minute; a user who mistyped the URL should hear at once.
    const url = config.schemaRegistry;
    await fetch(`${url}/subjects`, { signal: AbortSignal.timeout(5000) }).catch((err: Error) => {
      throw unreachable('Schema Registry', url, 'registry', 'schema-registry', err.cause ?? err);
    });
  }
  const serde = new EventSerde(createRegistryClient(config.schemaRegistry));
  await serde.prepare(EVENT_KINDS);
  return serde;
}

export interface StreamRunOptions {
  features: FeatureSet;
  /** Consumer group id, before the namespace prefix. */
  group: string;
  allowedLatenessMs: number;
  /** See StreamOptions.maxClockSkewMs. */
  maxClockSkewMs?: number;
  maxBatch: number;
  /** The offline store to write, already holding the offline schema; unset = no offline writes. */
  offline?: ClickHouseClient;
  /** Record served vectors (for parity), read from the online store. */
  recordServed?: boolean;
  /**
   * Write the online store (default true). A group that does not writes only the offline store, beside a group that
   * does (and sends the dead letters): ClickHouse then never holds up the online features.
   */
  online?: boolean;
  log: Logger;
}

export interface OpenedStream {
  service: StreamService;
  eventLog: EventLog;
  online: FeatureReader;
  checkpoints: CheckpointStore;
  metrics: StreamMetrics;
  /** True once every source partition's checkpoint has reached the log's end. */
  caughtUp(): Promise<boolean>;
  /** Stops the service and closes what was opened here (not the offline client). */
  close(): Promise<void>;
}

/**
 * Builds the stream service from the configuration; start it with `service.start()`. With no Valkey the online
 * store and checkpoints live in this process, so they start empty: the group starts again from the log's
 * beginning and the offline tables the stream writes are cleared first, and the whole derived state is rebuilt
 * from the log (the embedded default's honest durability: the log is what survives a restart).
 */
export async function openStream(config: Config, o: StreamRunOptions): Promise<OpenedStream> {
  const embedded = !config.valkey;
  if (embedded && config.kafka.length > 0) {
    throw new ConfigError('the in-process online store works with the file log only: pass --valkey, or drop --kafka');
  }
  if (embedded && o.offline && config.clickhouse) {
    throw new ConfigError(
      'the in-process online store rebuilds its offline output on each start, which a ClickHouse server should not see: pass --valkey, or drop --clickhouse',
    );
  }
  const writesOnline = o.online !== false;
  if (!writesOnline && (embedded || !o.offline || o.recordServed)) {
    throw new ConfigError(
      'a stream that writes only ClickHouse needs --valkey (its checkpoints live there), ClickHouse, and no --record-served (served vectors are read from the online store as it writes)',
    );
  }
  const groupId = `${config.namespace}${o.group}`;
  const serde = await openSerde(config);
  const eventLog = openEventLog(config, o.log, 'tributary-stream');
  await eventLog.ensureTopics(allTopics(config.namespace), config.partitions);

  let online: MemoryStore | ValkeyStore;
  let checkpoints: CheckpointStore;
  let valkey: Valkey | Cluster | undefined;
  let deadLettered: Record<string, number> | undefined;
  if (config.valkey) {
    // Failed commands surface quickly; the service retries them with backoff and keeps its group membership.
    valkey = await connectValkey(config.valkey, { enableAutoPipelining: true, maxRetriesPerRequest: 2 }, (err) =>
      o.log.warn({ err: err.message }, 'valkey connection error'),
    );
    online = new ValkeyStore(valkey, {
      features: o.features,
      namespace: config.namespace,
      ttlSeconds: Math.ceil((o.features.retentionMs + o.allowedLatenessMs) / 1000),
      // The online store answers the present: reads at or after the prune horizon (the slowest watermark, below
      // which no event is admitted). History is the offline store's.
      retentionMs: 0,
    });
    checkpoints = new ValkeyCheckpoints(valkey, groupId);
  } else {
    // Where the previous run got to: its dead letters up to there are in the log already.
    deadLettered = (eventLog as FileEventLog).log.committed(groupId);
    (eventLog as FileEventLog).log.resetGroup(groupId);
    online = new MemoryStore(o.features);
    checkpoints = new MemoryCheckpoints();
  }
  if (o.offline) {
    await ensureOfflineSchema(o.offline, { cluster: config.clickhouseCluster });
    if (embedded) await clearStreamTables(o.offline);
  }

  const metrics = new StreamMetrics();
  const service = new StreamService(
    {
      eventLog,
      serde,
      features: o.features,
      online: writesOnline ? online : undefined,
      offline: o.offline && new OfflineSink(o.offline),
      served: o.recordServed ? online : undefined,
      checkpoints,
      metrics,
      log: o.log,
    },
    {
      namespace: config.namespace,
      groupId,
      allowedLatenessMs: o.allowedLatenessMs,
      maxClockSkewMs: o.maxClockSkewMs,
      maxBatch: o.maxBatch,
      deadLettered,
      sendDeadLetters: writesOnline,
    },
  );
  return {
    service,
    eventLog,
    online,
    checkpoints,
    metrics,
    caughtUp: () => caughtUp(eventLog, checkpoints, Object.values(sourceTopics(config.namespace))),
    close: async () => {
      await service.stop();
      valkey?.disconnect();
      if (eventLog instanceof FileEventLog) eventLog.log.close();
    },
  };
}

/** True once every partition's checkpoint of these topics has reached the end of the log. */
export async function caughtUp(log: EventLog, checkpoints: CheckpointStore, topics: string[]): Promise<boolean> {
  return (await partitionProgress(log, checkpoints, topics)).every((p) => p.lag === 0);
}
