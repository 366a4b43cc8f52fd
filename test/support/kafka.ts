// Test helpers for reading back what was published, from the offsets a test recorded before publishing.
import type { Admin, Kafka } from 'kafkajs';

export type Offsets = Map<number, string>;

/** The high offset per partition; none for a topic not created yet (its first messages start at 0). */
export async function endOffsets(admin: Admin, topic: string): Promise<Offsets> {
  if (!(await admin.listTopics()).includes(topic)) return new Map();
  return new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, p.high]));
}

export function countSince(before: Offsets, after: Offsets): number {
  let n = 0;
  for (const [p, high] of after) n += Number(high) - Number(before.get(p) ?? '0');
  return n;
}

/** Reads every message of `topic` in [from, to) per partition (scans from the start: test topics are small). */
export async function readRange(kafka: Kafka, topic: string, from: Offsets, to: Offsets): Promise<Buffer[]> {
  const expected = countSince(from, to);
  const out: Buffer[] = [];
  if (expected === 0) return out;
  const consumer = kafka.consumer({ groupId: `test-read-${topic}-${Date.now()}-${Math.random()}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${out.length} of ${expected} from ${topic}`)), 60_000);
    consumer
      .run({
        eachBatch: async ({ batch }) => {
          const start = BigInt(from.get(batch.partition) ?? '0');
          const end = BigInt(to.get(batch.partition) ?? '0');
          for (const m of batch.messages) {
            const o = BigInt(m.offset);
            if (o >= start && o < end && m.value) out.push(m.value);
          }
          if (out.length >= expected) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
  try {
    await done;
  } finally {
    await consumer.disconnect();
  }
  return out;
}
