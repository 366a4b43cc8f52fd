// The console's dead letters (DeadLetterWatch) on a file log: at every step the same summary as reading the whole
// topic (summarizeDeadLetters), while each letter is read once: a poll with nothing new reads no letter, new letters
// are read from where the last poll stopped, and a replay recorded in the ledger recounts which are replayed.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DeadLetterWatch } from '../../src/console/dead-letters.ts';
import { allTopics, deadLetterReplaysTopic, deadLetterTopic, topicOf } from '../../src/events/catalog.ts';
import { FileEventLog } from '../../src/log/file-event-log.ts';
import { summarizeDeadLetters } from '../../src/streams/dead-letter-reader.ts';
import type { EventLog, OutMessage } from '../../src/streams/event-log.ts';
import { deadLetterMessage } from '../../src/streams/processor.ts';

const ns = 'cdl.';
const reasons = ['late: 2921s behind the watermark', 'unknown schema id 987654', 'unknown magic byte 100'];

/** The file log, with each ranged read of the dead-letter topic recorded (partition, from). */
function recorded(dir: string) {
  const log = new FileEventLog(dir);
  const reads: [number, number][] = [];
  const counting: EventLog = {
    where: log.where,
    ensureTopics: (t, p) => log.ensureTopics(t, p),
    endOffsets: (t) => log.endOffsets(t),
    read: (topic, partition, from, max) => {
      if (topic === deadLetterTopic(ns)) reads.push([partition, from]);
      return log.read(topic, partition, from, max);
    },
    consumer: (g) => log.consumer(g),
    producer: () => log.producer(),
  };
  return { log: counting, reads };
}

let offset = 0;
const letter = (partition: number, reason: string): OutMessage => ({
  ...deadLetterMessage({
    reason,
    key: Buffer.from('k'),
    value: Buffer.from('bad bytes'),
    coordinates: { topic: topicOf('impression', ns), partition: 0, offset: offset++, ingest_time: 1_700_000_000_000 },
  } as Parameters<typeof deadLetterMessage>[0]),
  partition,
});

async function send(log: EventLog, topic: string, messages: OutMessage[]) {
  const producer = log.producer();
  await producer.connect();
  await producer.send([{ topic, messages }]);
  await producer.disconnect();
}

describe('the console dead letters', () => {
  it('match a full read at each step, reading each letter once', async () => {
    const { log, reads } = recorded(mkdtempSync(join(tmpdir(), 'console-dead-letters-')));
    await log.ensureTopics([...allTopics(ns), deadLetterReplaysTopic(ns)], 3);
    const watch = new DeadLetterWatch(log, ns);
    const full = async () => {
      const before = reads.length;
      const summary = await summarizeDeadLetters(log, ns, { examples: 3 });
      reads.splice(before);
      return summary;
    };

    await send(
      log,
      deadLetterTopic(ns),
      Array.from({ length: 9 }, (_, i) => letter(i % 3, reasons[i % 2] as string)),
    );
    expect(await watch.summary()).toEqual(await full());
    expect(reads.map(([p, from]) => [p, from])).toEqual([
      [0, 0],
      [1, 0],
      [2, 0],
    ]);

    // Nothing new: no letter read; polls at once share one catch-up.
    reads.length = 0;
    const [a, b] = await Promise.all([watch.summary(), watch.summary()]);
    expect(a).toEqual(b);
    expect(reads).toEqual([]);

    // New letters in one partition: read from where the last poll stopped.
    await send(log, deadLetterTopic(ns), [letter(1, reasons[2] as string), letter(1, reasons[0] as string)]);
    const now = await watch.summary();
    expect(reads).toEqual([[1, 3]]);
    expect(now).toEqual(await full());
    expect(now.map((r) => [r.reasonClass, r.count])).toEqual([
      ['late', 6],
      ['unknown schema id', 4],
      ['unknown magic byte', 1],
    ]);

    // A replay recorded in the ledger: counted afresh, that letter replayed.
    reads.length = 0;
    await send(log, deadLetterReplaysTopic(ns), [
      {
        key: null,
        value: Buffer.from(
          JSON.stringify({
            state: 'done',
            letter: '1:3',
            target: { topic: topicOf('impression', ns), partition: 0, from: 0 },
            sourceOffset: 9,
          }),
        ),
      },
    ]);
    const replayed = await watch.summary();
    expect(replayed).toEqual(await full());
    expect(replayed.find((r) => r.reasonClass === 'unknown magic byte')?.replayed).toBe(1);
    expect(reads.length).toBe(3);
  });
});
