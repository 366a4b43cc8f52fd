// What the stream service needs from an event log, whether Kafka (src/kafka/event-log.ts) or the embedded file log
// (src/log/file-event-log.ts): topics of partitions of offset-ordered messages, a consumer group reading batches
// with resolveOffset/heartbeat semantics (kafkajs' eachBatch), and a producer for dead letters and publishing.
import type { LogMessage } from './processor.ts';

export interface LogBatchPayload {
  batch: { topic: string; partition: number; messages: LogMessage[]; lastOffset(): string };
  /** Marks messages up to this offset done: the group's position and committed offset move past it. */
  resolveOffset(offset: string): void;
  heartbeat(): Promise<void>;
  isRunning(): boolean;
  /** True when the batch's partition has moved to another member meanwhile (a rebalance). */
  isStale(): boolean;
  commitOffsetsIfNecessary(): Promise<void>;
}

export interface LogConsumer {
  /**
   * Consumes the topics from the group's committed offsets (from the beginning when it has none) until
   * disconnect(), one batch of one partition at a time. `onAssign` runs whenever partitions (may) have moved.
   */
  start(topics: string[], eachBatch: (p: LogBatchPayload) => Promise<void>, onAssign: () => void): Promise<void>;
  /** The next batch of this partition starts at `offset`. */
  seek(topic: string, partition: number, offset: number): void;
  disconnect(): Promise<void>;
}

/** A message as a ranged read returns it: with its headers (as text). */
export type ReadMessage = LogMessage & { headers?: Record<string, string> };

export interface OutMessage {
  key: Buffer | string | null;
  /** This partition of the topic, instead of the key's (a replay goes back where its original was). */
  partition?: number;
  value: Buffer | null;
  /** Epoch ms as a string (kafkajs' convention); default: now. */
  timestamp?: string;
  headers?: Record<string, string>;
}

export interface LogProducer {
  connect(): Promise<void>;
  /** Appends durably (all replicas / fsync) or throws; partitions by key as Kafka's default partitioner does. */
  send(topicMessages: { topic: string; messages: OutMessage[] }[]): Promise<void>;
  disconnect(): Promise<void>;
}

export interface EventLog {
  /** Where the log lives, for messages ("Kafka at host:port", "file log at DIR"). */
  readonly where: string;
  /** Creates missing topics with this many partitions; existing topics stay as they are. */
  ensureTopics(topics: string[], partitions: number): Promise<void>;
  /** Next offset to be written, per partition of a topic; none for a topic that does not exist. */
  endOffsets(topic: string): Promise<{ partition: number; offset: number }[]>;
  /**
   * Up to `max` messages of one partition from offset `from` on, in offset order, with their headers: those below
   * the partition's end when the read starts (fewer or none at the tail). No consumer group is left behind.
   */
  read(topic: string, partition: number, from: number, max: number): Promise<ReadMessage[]>;
  consumer(groupId: string): LogConsumer;
  producer(): LogProducer;
  /** The most bytes one produce request may carry to `topic` (Kafka's max.message.bytes); none for the file log. */
  maxMessageBytes?(topic: string): Promise<number | undefined>;
}
