// Kafka behind the EventLog interface: the stream service's consumer group and producers, via kafkajs.
// (ConfigResourceTypes from the package's default export: Node's CommonJS export detection misses it.)
import { randomUUID } from 'node:crypto';
import kafkajs, { type Consumer, type IHeaders, type Kafka, type KafkaMessage, type Producer } from 'kafkajs';
import type {
  EventLog,
  LogBatchPayload,
  LogConsumer,
  LogProducer,
  OutMessage,
  ReadMessage,
} from '../streams/event-log.ts';
import { ensureTopics, kafkaUnreachable, withAdmin } from './client.ts';

export class KafkaEventLog implements EventLog {
  readonly where: string;

  constructor(
    readonly kafka: Kafka,
    private readonly brokers: string[],
  ) {
    this.where = `Kafka at ${brokers.join(',')}`;
  }

  ensureTopics(topics: string[], partitions: number): Promise<void> {
    return withAdmin(this.kafka, this.brokers, (admin) => ensureTopics(admin, topics, partitions));
  }

  async endOffsets(topic: string): Promise<{ partition: number; offset: number }[]> {
    const offsets = await withAdmin(this.kafka, this.brokers, async (admin) =>
      // As on the file log, a topic that does not exist has no partitions (kafkajs would retry for a minute).
      (await admin.listTopics()).includes(topic) ? admin.fetchTopicOffsets(topic) : [],
    );
    return offsets.map((p) => ({ partition: p.partition, offset: Number(p.high) }));
  }

  async maxMessageBytes(topic: string): Promise<number | undefined> {
    const described = await withAdmin(this.kafka, this.brokers, (admin) =>
      admin.describeConfigs({
        resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topic, configNames: ['max.message.bytes'] }],
        includeSynonyms: false,
      }),
    );
    const value = Number(described.resources[0]?.configEntries[0]?.configValue);
    return Number.isFinite(value) && value > 0 ? value : undefined;
  }

  /**
   * A throwaway consumer group that never commits, sought to `from`; its partitions other than this one are paused.
   * Stops at the partition's end offset when the read starts, or after `max` messages.
   */
  async read(topic: string, partition: number, from: number, max: number): Promise<ReadMessage[]> {
    const offsets = await withAdmin(this.kafka, this.brokers, async (admin) =>
      (await admin.listTopics()).includes(topic) ? admin.fetchTopicOffsets(topic) : [],
    );
    const range = offsets.find((o) => o.partition === partition);
    const end = Number(range?.high ?? 0);
    const start = Math.max(from, Number(range?.low ?? 0));
    if (!range || start >= end || max <= 0) return [];
    const groupId = `tributary-read-${randomUUID()}`;
    const consumer = this.kafka.consumer({ groupId, maxWaitTimeInMs: 100, maxBytesPerPartition: 4 << 20 });
    const out: ReadMessage[] = [];
    try {
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      await new Promise<void>((resolve, reject) => {
        // A read that makes no progress (the broker gone) fails instead of hanging.
        let timer = setTimeout(() => reject(new Error(`reading ${topic}/${partition} timed out`)), READ_IDLE_MS);
        consumer
          .run({
            autoCommit: false,
            eachBatch: async ({ batch }) => {
              if (batch.partition !== partition) {
                consumer.pause([{ topic, partitions: [batch.partition] }]);
                return;
              }
              clearTimeout(timer);
              timer = setTimeout(() => reject(new Error(`reading ${topic}/${partition} timed out`)), READ_IDLE_MS);
              for (const m of batch.messages) {
                const o = Number(m.offset);
                if (o >= start && o < end && out.length < max) out.push(readMessage(m));
              }
              if (out.length >= max || Number(batch.lastOffset()) + 1 >= end) {
                clearTimeout(timer);
                resolve();
              }
            },
          })
          .catch(reject);
        consumer.seek({ topic, partition, offset: String(start) });
      });
    } finally {
      await consumer.disconnect().catch(() => undefined);
      await withAdmin(this.kafka, this.brokers, (admin) => admin.deleteGroups([groupId])).catch(() => undefined);
    }
    return out;
  }

  consumer(groupId: string): LogConsumer {
    return new KafkaLogConsumer(
      this.kafka.consumer({
        groupId,
        // A crashed member's partitions wait this long before moving; short, since restarts should be quick.
        sessionTimeout: 10_000,
        rebalanceTimeout: 20_000,
        heartbeatInterval: 1_000,
        maxBytesPerPartition: 4 << 20,
      }),
    );
  }

  producer(): LogProducer {
    return new KafkaLogProducer(this.kafka.producer({ idempotent: true, maxInFlightRequests: 1 }), this.brokers);
  }
}

/** How long a ranged read may go without a batch before it fails. */
const READ_IDLE_MS = 30_000;

function headersOf(h: IHeaders | undefined): Record<string, string> | undefined {
  if (!h) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v !== undefined) out[k] = (Array.isArray(v) ? v : [v]).map(String).join(',');
  }
  return out;
}

function readMessage(m: KafkaMessage): ReadMessage {
  const out: ReadMessage = { offset: m.offset, timestamp: m.timestamp, key: m.key, value: m.value };
  const headers = headersOf(m.headers);
  if (headers) out.headers = headers;
  return out;
}

/** Partitions whose batches may be in hand at once (each partition's own batches stay in order). */
const PARTITIONS_AT_ONCE = 4;

/** How long a resolved offset may wait before the group's committed offset follows it. */
const COMMIT_EVERY_MS = 1000;
/** How long a stop waits for the last commit of the group's offsets. */
const FINAL_COMMIT_MS = 2000;

export class KafkaLogConsumer implements LogConsumer {
  /** Per "topic|partition", the next offset to commit (resolved, not yet committed). */
  private readonly resolved = new Map<string, { topic: string; partition: number; offset: string }>();
  private commitTimer: NodeJS.Timeout | undefined;
  private committing: Promise<void> = Promise.resolve();

  constructor(private readonly consumer: Consumer) {}

  async start(topics: string[], eachBatch: (p: LogBatchPayload) => Promise<void>, onAssign: () => void): Promise<void> {
    this.consumer.on(this.consumer.events.GROUP_JOIN, () => {
      // Offsets resolved under the last assignment are another member's to commit now.
      this.resolved.clear();
      onAssign();
    });
    await this.consumer.connect();
    await this.consumer.subscribe({ topics, fromBeginning: true });
    await this.consumer.run({
      // The service resolves offsets only after a batch's checkpoint commits, so the group's committed offsets
      // (advisory: lag monitoring and a fast start) never run ahead of the checkpoint. They are committed here, off
      // the batch's path, at most once a COMMIT_EVERY_MS: kafkajs's autoCommit commits after every batch, a broker
      // round trip before the next fetch.
      autoCommit: false,
      eachBatchAutoResolve: false,
      // Batches of different partitions overlap: one computes while another waits on its writes.
      partitionsConsumedConcurrently: PARTITIONS_AT_ONCE,
      eachBatch: (payload) =>
        eachBatch({
          ...payload,
          resolveOffset: (offset) => {
            payload.resolveOffset(offset);
            const { topic, partition } = payload.batch;
            this.resolved.set(`${topic}|${partition}`, { topic, partition, offset: String(Number(offset) + 1) });
          },
          commitOffsetsIfNecessary: async () => {
            this.commitTimer ??= setTimeout(() => {
              this.commitTimer = undefined;
              this.committing = this.commit();
            }, COMMIT_EVERY_MS);
          },
        }),
    });
  }

  /** Commits what is resolved; a failure (a rebalance meanwhile) leaves it to the next member or commit. */
  private async commit(): Promise<void> {
    const offsets = [...this.resolved.values()];
    this.resolved.clear();
    if (offsets.length > 0) await this.consumer.commitOffsets(offsets).catch(() => undefined);
  }

  seek(topic: string, partition: number, offset: number): void {
    this.consumer.seek({ topic, partition, offset: String(offset) });
  }

  async disconnect(): Promise<void> {
    clearTimeout(this.commitTimer);
    this.commitTimer = undefined;
    // The last resolved offsets, if the broker answers soon: a stop must not wait on an unreachable one.
    let timer: NodeJS.Timeout | undefined;
    const soon = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, FINAL_COMMIT_MS);
    });
    await Promise.race([this.committing.then(() => this.commit()), soon]);
    clearTimeout(timer);
    await this.consumer.disconnect();
  }
}

export class KafkaLogProducer implements LogProducer {
  constructor(
    private readonly producer: Producer,
    private readonly brokers: string[] = [],
  ) {}

  async connect(): Promise<void> {
    try {
      await this.producer.connect();
    } catch (err) {
      throw kafkaUnreachable(this.brokers, err);
    }
  }

  async send(topicMessages: { topic: string; messages: OutMessage[] }[]): Promise<void> {
    await this.producer.sendBatch({ topicMessages, acks: -1 });
  }

  disconnect(): Promise<void> {
    return this.producer.disconnect();
  }
}
