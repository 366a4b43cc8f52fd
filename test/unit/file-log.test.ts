// The embedded event log: what is appended reads back in order after a restart, a torn tail is cut off rather than
// crashing anything, and a consumer group follows the tail and resumes from its committed offsets.
import { appendFileSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type PartitionerArgs, Partitioners } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { Admission } from '../../src/features/admission.ts';
import { FileEventLog } from '../../src/log/file-event-log.ts';
import { FileLog, type LogRecord } from '../../src/log/file-log.ts';
import { MemoryCheckpoints } from '../../src/streams/checkpoint.ts';
import type { LogBatchPayload } from '../../src/streams/event-log.ts';
import { partitionProgress } from '../../src/streams/progress.ts';

const fresh = () => mkdtempSync(join(tmpdir(), 'tributary-log-'));
const rec = (i: number): LogRecord => ({
  key: i % 3 === 0 ? null : Buffer.from(`k${i}`),
  value: i % 5 === 0 ? null : Buffer.from(`value ${i} `.repeat(i % 7)),
  timestamp: 1_700_000_000_000 + i,
  headers: i % 4 === 0 ? { reason: `r${i}` } : undefined,
});
/** The messages are rec(0), rec(1), ... rec(n - 1) at offsets 0..n-1. */
const expectRecords = (messages: ReturnType<FileLog['read']>, n: number) => {
  expect(messages).toHaveLength(n);
  for (const [i, m] of messages.entries()) {
    const r = rec(i);
    expect(m.offset).toBe(String(i));
    expect(m.timestamp).toBe(String(r.timestamp));
    expect(m.key).toEqual(r.key);
    expect(m.value).toEqual(r.value);
    expect(m.headers).toEqual(r.headers);
  }
};

describe('file log', () => {
  it('reads back appended records by offset, across a restart, and appends after them', () => {
    const dir = fresh();
    const log = new FileLog(dir);
    log.ensureTopics(['t'], 2);
    log.append([
      { topic: 't', partition: 0, records: [0, 1, 2, 3].map(rec) },
      { topic: 't', partition: 1, records: [rec(0)] },
    ]);
    log.append([{ topic: 't', partition: 0, records: [4, 5, 6].map(rec) }]);
    expect(log.endOffset('t', 0)).toBe(7);
    expectRecords(log.read('t', 0, 0, 100), 7);
    expect(log.read('t', 0, 2, 3).map((m) => m.offset)).toEqual(['2', '3', '4']);
    expect(log.read('t', 0, 7, 10)).toEqual([]);
    log.close();

    const again = new FileLog(dir);
    again.ensureTopics(['t'], 5); // an existing topic keeps its partitions
    expect(again.partitions('t')).toBe(2);
    expect(again.endOffset('t', 0)).toBe(7);
    again.append([{ topic: 't', partition: 0, records: [7, 8].map(rec) }]);
    expectRecords(again.read('t', 0, 0, 100), 9);
    expect(again.read('t', 1, 0, 10)).toHaveLength(1);
    expect(() => again.read('t', 9, 0, 1)).toThrow(/no partition t\/9/);
  });

  it('stops at a torn or corrupt last record, and a writer cuts it off before appending', () => {
    const dir = fresh();
    const log = new FileLog(dir);
    log.ensureTopics(['t'], 1);
    log.append([{ topic: 't', partition: 0, records: [0, 1, 2].map(rec) }]);
    log.close();
    const path = join(dir, 't', '0.log');
    const good = statSync(path).size;
    const whole = readFileSync(path);

    // A crash mid-append: half a record's bytes at the end.
    appendFileSync(path, Buffer.from([0, 0, 0, 40, 1, 2, 3, 4, 5]));
    const reader = new FileLog(dir);
    expect(reader.read('t', 0, 0, 10).map((m) => m.offset)).toEqual(['0', '1', '2']);
    expect(statSync(path).size).toBeGreaterThan(good); // a reader leaves the file alone

    // A whole-length record whose bytes are wrong (crc mismatch) is not valid either.
    const corrupt = Buffer.from(whole);
    corrupt.writeUInt8(corrupt.readUInt8(corrupt.length - 1) ^ 0xff, corrupt.length - 1);
    writeFileSync(path, corrupt);
    const reader2 = new FileLog(dir);
    expect(reader2.endOffset('t', 0)).toBe(2);

    reader2.append([{ topic: 't', partition: 0, records: [rec(2), rec(3)] }]);
    expect(reader2.endOffset('t', 0)).toBe(4);
    reader2.close();
    const after = new FileLog(dir);
    expectRecords(after.read('t', 0, 0, 10), 4);
  });

  it('indexes records larger than its read chunk, and the records around them', () => {
    const dir = fresh();
    const log = new FileLog(dir);
    log.ensureTopics(['t'], 1);
    const big = Buffer.alloc(5 << 20, 7);
    const small = (i: number) => ({ key: null, value: Buffer.from(`s${i}`), timestamp: i });
    log.append([{ topic: 't', partition: 0, records: [small(0), { key: null, value: big, timestamp: 1 }, small(2)] }]);
    log.close();
    const again = new FileLog(dir);
    const got = again.read('t', 0, 0, 10);
    expect(got.map((m) => m.value?.length)).toEqual([2, big.length, 2]);
    expect(got[1]?.value?.equals(big)).toBe(true);
    expect(String(got[2]?.value)).toBe('s2');
  });

  it('keeps committed offsets per group, merged, and forgets them on reset', () => {
    const log = new FileLog(fresh());
    expect(log.committed('g')).toEqual({});
    log.commit('g', { 't/0': 3 });
    log.commit('g', { 't/1': 5 });
    log.commit('other/group', { 't/0': 1 });
    expect(log.committed('g')).toEqual({ 't/0': 3, 't/1': 5 });
    log.resetGroup('g');
    expect(log.committed('g')).toEqual({});
    expect(log.committed('other/group')).toEqual({ 't/0': 1 });
  });
});

describe('file event log (the Kafka interface)', () => {
  it('partitions by key as Kafka does, follows the tail, refetches what is unresolved, resumes from commits', async () => {
    const events = new FileEventLog(fresh());
    await events.ensureTopics(['t'], 3);
    const producer = events.producer();
    const keys = Array.from({ length: 30 }, (_, i) => `user-${i}`);
    await producer.send([{ topic: 't', messages: keys.map((key, i) => ({ key, value: Buffer.from(String(i)) })) }]);
    const kafka = Partitioners.DefaultPartitioner();
    const partitionMetadata = [0, 1, 2].map((partitionId) => ({ partitionId, leader: 0 }));
    const expected = keys.map((key) => kafka({ topic: 't', partitionMetadata, message: { key } } as PartitionerArgs));
    const seen = new Map<string, number>();
    const got: string[] = [];
    let failOnce = true;
    const eachBatch = async ({ batch, resolveOffset, commitOffsetsIfNecessary }: LogBatchPayload) => {
      for (const m of batch.messages) {
        // Leave the last message of the first batch unresolved: it must come again.
        if (failOnce && m === batch.messages[batch.messages.length - 1]) {
          failOnce = false;
          return;
        }
        got.push(String(m.value));
        seen.set(String(m.key), batch.partition);
        resolveOffset(m.offset);
      }
      await commitOffsetsIfNecessary();
    };
    const consumer = events.consumer('g');
    await consumer.start(['t'], eachBatch, () => {});
    const until = async (n: number) => {
      for (let i = 0; got.length < n && i < 100; i++) await new Promise((r) => setTimeout(r, 20));
    };
    await until(30);
    expect(keys.map((k) => seen.get(k))).toEqual(expected);
    await producer.send([{ topic: 't', messages: [{ key: 'late', value: Buffer.from('30') }] }]);
    await until(31);
    await consumer.disconnect();
    expect(got.map(Number).sort((a, b) => a - b)).toEqual(Array.from({ length: 31 }, (_, i) => i));
    expect((await events.endOffsets('t')).reduce((s, p) => s + p.offset, 0)).toBe(31);

    // A new member of the group starts after what was committed: only new messages.
    await producer.send([{ topic: 't', messages: [{ key: 'again', value: Buffer.from('31') }] }]);
    got.length = 0;
    const second = events.consumer('g');
    await second.start(['t'], eachBatch, () => {});
    await until(1);
    await new Promise((r) => setTimeout(r, 150));
    await second.disconnect();
    expect(got).toEqual(['31']);
  });
});

describe('partition progress', () => {
  it('is the log end against the last commit: lag, newest event time, commit time; zero before any commit', async () => {
    const events = new FileEventLog(fresh());
    await events.ensureTopics(['t'], 2);
    events.log.append([{ topic: 't', partition: 0, records: [0, 1, 2, 3, 4].map(rec) }]);
    events.log.append([{ topic: 't', partition: 1, records: [rec(0)] }]);
    const checkpoints = new MemoryCheckpoints();
    const admission = new Admission(1000);
    admission.admit('e1', 1_700_000_000_500);
    const before = Date.now();
    await checkpoints.begin('t/0', 0, 2);
    await checkpoints.commit('t/0', 3, admission);
    const [p0, p1] = await partitionProgress(events, checkpoints, ['t']);
    expect(p0).toMatchObject({ topic: 't', partition: 0, end: 5, next: 3, lag: 2, newestEventTime: 1_700_000_000_500 });
    expect(p0?.committedAt).toBeGreaterThanOrEqual(before);
    expect(p1).toEqual({ topic: 't', partition: 1, end: 1, next: 0, lag: 1 });
  });
});
