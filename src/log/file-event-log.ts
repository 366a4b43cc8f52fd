// The file log behind the EventLog interface the stream service and publishers use with Kafka. A consumer group
// here has one member (this process) that owns every partition; offsets commit to the log's folder.
import { type PartitionerArgs, Partitioners } from 'kafkajs';
import type { Logger } from 'pino';
import type {
  EventLog,
  LogBatchPayload,
  LogConsumer,
  LogProducer,
  OutMessage,
  ReadMessage,
} from '../streams/event-log.ts';
import { getOrCreate } from '../util/map.ts';
import { FileLog, type LogRecord } from './file-log.ts';

/** Records per fetched batch, as Kafka's fetch size bounds a batch. */
const FETCH_RECORDS = 20_000;
/** How often a consumer at the tail looks for appends by other processes. */
const POLL_MS = 100;

export class FileEventLog implements EventLog {
  readonly log: FileLog;
  readonly where: string;

  constructor(
    dir: string,
    private readonly logger?: Logger,
  ) {
    this.log = new FileLog(dir);
    this.where = `file log at ${dir}`;
  }

  async ensureTopics(topics: string[], partitions: number): Promise<void> {
    this.log.ensureTopics(topics, partitions);
  }

  async endOffsets(topic: string): Promise<{ partition: number; offset: number }[]> {
    return Array.from({ length: this.log.partitions(topic) }, (_, partition) => ({
      partition,
      offset: this.log.endOffset(topic, partition),
    }));
  }

  async read(topic: string, partition: number, from: number, max: number): Promise<ReadMessage[]> {
    if (partition >= this.log.partitions(topic)) return [];
    return this.log.read(topic, partition, Math.max(0, from), max);
  }

  consumer(groupId: string): LogConsumer {
    return new FileLogConsumer(this.log, groupId, this.logger);
  }

  producer(): LogProducer {
    return new FileLogProducer(this.log);
  }
}

class FileLogProducer implements LogProducer {
  // Kafka's default partitioner (murmur2 of the key), so a key lands in the same partition number as on Kafka.
  private readonly partitioner = Partitioners.DefaultPartitioner();

  constructor(private readonly log: FileLog) {}

  async connect(): Promise<void> {}
  async disconnect(): Promise<void> {}

  async send(topicMessages: { topic: string; messages: OutMessage[] }[]): Promise<void> {
    const batches = new Map<string, { topic: string; partition: number; records: LogRecord[] }>();
    const now = Date.now();
    for (const { topic, messages } of topicMessages) {
      const n = this.log.partitions(topic);
      if (n === 0) throw new Error(`topic ${topic} does not exist in the file log at ${this.log.dir}`);
      const partitionMetadata = Array.from({ length: n }, (_, partitionId) => ({ partitionId, leader: 0 }));
      for (const m of messages) {
        const partition =
          m.partition ?? this.partitioner({ topic, partitionMetadata, message: m } as unknown as PartitionerArgs);
        if (partition < 0 || partition >= n) throw new Error(`topic ${topic} has no partition ${partition}`);
        const b = getOrCreate(batches, `${topic}/${partition}`, () => ({ topic, partition, records: [] }));
        b.records.push({
          key: typeof m.key === 'string' ? Buffer.from(m.key) : m.key,
          value: m.value,
          timestamp: m.timestamp === undefined ? now : Number(m.timestamp),
          headers: m.headers,
        });
      }
    }
    this.log.append([...batches.values()]);
  }
}

class FileLogConsumer implements LogConsumer {
  private running = false;
  private loop?: Promise<void>;
  /** Next offset to fetch per partition: the last resolved offset + 1, unless a seek moved it. */
  private readonly position = new Map<string, number>();
  private readonly seeks = new Map<string, number>();
  private readonly uncommitted = new Map<string, number>();

  constructor(
    private readonly log: FileLog,
    private readonly groupId: string,
    private readonly logger?: Logger,
  ) {}

  async start(topics: string[], eachBatch: (p: LogBatchPayload) => Promise<void>, onAssign: () => void): Promise<void> {
    const committed = this.log.committed(this.groupId);
    const parts = topics.flatMap((topic) =>
      Array.from({ length: this.log.partitions(topic) }, (_, partition) => ({ topic, partition })),
    );
    for (const { topic, partition } of parts)
      this.position.set(`${topic}/${partition}`, committed[`${topic}/${partition}`] ?? 0);
    onAssign();
    this.running = true;
    this.loop = this.run(parts, eachBatch);
  }

  private async run(parts: { topic: string; partition: number }[], eachBatch: (p: LogBatchPayload) => Promise<void>) {
    while (this.running) {
      let fetched = false;
      for (const { topic, partition } of parts) {
        if (!this.running) break;
        const id = `${topic}/${partition}`;
        const messages = this.log.read(topic, partition, this.position.get(id) as number, FETCH_RECORDS);
        if (messages.length === 0) continue;
        fetched = true;
        this.seeks.delete(id);
        try {
          await eachBatch({
            batch: { topic, partition, messages, lastOffset: () => messages[messages.length - 1]?.offset as string },
            resolveOffset: (o) => {
              this.position.set(id, Number(o) + 1);
              this.uncommitted.set(id, Number(o) + 1);
            },
            heartbeat: async () => {},
            isRunning: () => this.running,
            isStale: () => false,
            commitOffsetsIfNecessary: async () => this.commit(),
          });
        } catch (err) {
          // As kafkajs does: the unresolved messages are fetched again, after a pause.
          this.logger?.error({ err, partition: id }, 'batch failed; fetching it again');
          await new Promise((r) => setTimeout(r, 1000));
        }
        const seek = this.seeks.get(id);
        if (seek !== undefined) this.position.set(id, seek);
      }
      if (!fetched && this.running) await this.log.appended(POLL_MS);
    }
    this.commit();
  }

  private commit(): void {
    if (this.uncommitted.size === 0) return;
    this.log.commit(this.groupId, Object.fromEntries(this.uncommitted));
    this.uncommitted.clear();
  }

  seek(topic: string, partition: number, offset: number): void {
    this.seeks.set(`${topic}/${partition}`, offset);
  }

  async disconnect(): Promise<void> {
    this.running = false;
    await this.loop;
  }
}
