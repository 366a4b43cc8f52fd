// kafkajs wiring shared by every stage: one place for client options, topic creation and reachability errors.
import { type Admin, Kafka, logLevel } from 'kafkajs';
import { type ServiceUnreachableError, unreachable } from '../config/unreachable.ts';

export function createKafka(brokers: string[], clientId = 'tributary'): Kafka {
  return new Kafka({
    clientId,
    brokers,
    logLevel: logLevel.NOTHING,
    // About 50 s of retries in all, past a dead broker's fencing (9 s) and the election that moves its partitions,
    // at most 3 s apart so a request follows its partition's new leader soon. All spelt out: under NODE_ENV=test
    // (vitest) kafkajs's defaults differ.
    retry: { retries: 20, initialRetryTime: 200, maxRetryTime: 3_000, multiplier: 2, factor: 0.2 },
    connectionTimeout: 3_000,
  });
}

export function kafkaUnreachable(brokers: string[], cause: unknown): ServiceUnreachableError {
  return unreachable('Kafka', brokers.join(','), 'kafka', 'kafka', cause);
}

/** Topics are replicated to at most this many brokers; with all of them, a write needs two in sync. */
const MAX_REPLICATION = 3;

/** The replication factor and configs of a new topic on the cluster the admin talks to. */
async function replicationFor(admin: Admin): Promise<{ replicationFactor: number; configs: Record<string, string> }> {
  const brokers = (await admin.describeCluster()).brokers.length;
  const replicationFactor = Math.max(1, Math.min(MAX_REPLICATION, brokers));
  // acks=all then means two copies: one broker may die without losing an acknowledged write or stopping writes.
  const configs: Record<string, string> = replicationFactor === MAX_REPLICATION ? { 'min.insync.replicas': '2' } : {};
  return { replicationFactor, configs };
}

/**
 * Creates missing topics with the given partition count, replicated as the cluster allows (replicationFor), with
 * `configs[topic]` on top; existing topics are left as they are. A busy broker can answer the wait for leaders with a
 * retriable error (UNKNOWN_TOPIC_OR_PARTITION): look again, a few times.
 */
export async function ensureTopics(
  admin: Admin,
  topics: string[],
  partitions: number,
  { configs = {}, attempts = 5 }: { configs?: Record<string, Record<string, string>>; attempts?: number } = {},
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      const existing = new Set(await admin.listTopics());
      const missing = topics.filter((t) => !existing.has(t));
      if (missing.length === 0) return;
      const replication = await replicationFor(admin);
      await admin.createTopics({
        waitForLeaders: true,
        topics: missing.map((topic) => ({
          topic,
          numPartitions: partitions,
          replicationFactor: replication.replicationFactor,
          configEntries: Object.entries({ ...replication.configs, ...configs[topic] }).map(([name, value]) => ({
            name,
            value,
          })),
        })),
      });
      return;
    } catch (err) {
      if (!(err as { retriable?: boolean }).retriable || attempt >= attempts) throw err;
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
}

export async function withAdmin<T>(kafka: Kafka, brokers: string[], fn: (admin: Admin) => Promise<T>): Promise<T> {
  const admin = kafka.admin();
  try {
    await admin.connect();
  } catch (err) {
    throw kafkaUnreachable(brokers, err);
  }
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}
