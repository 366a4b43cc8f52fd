// Sends chosen dead letters back into their source partitions once their cause is fixed, each at most once over any
// number of runs and crashes, and marked (header replay_of = the letter's "partition:offset") so the stream can tell
// a replay. No Kafka transactions: their commit markers take offsets, so a partition's end would never equal the
// next offset the stream processes (lag would never reach 0). Instead a ledger topic (deadLetterReplaysTopic):
//   1. "begun" entries, each with its target partition's end offset before anything is sent, are written durably;
//   2. the records are sent (acks from all replicas, or fsync on the file log);
//   3. "done" entries are written.
// A run finding a letter "begun" but not "done" (an earlier run crashed between 1 and 3) looks for its copy in the
// target partition from that end offset on: found, it is only marked done; not found, it is sent. So each letter's
// record lands in its partition once, on Kafka and on the file log alike, provided one replay runs at a time.
import { deadLetterReplaysTopic } from '../events/catalog.ts';
import {
  type DeadLetter,
  type DeadLetterView,
  type LedgerEntry,
  letterId,
  REPLAY_HEADER,
  readPartition,
  replayLedger,
  sourceId,
} from './dead-letter-reader.ts';
import type { EventLog, OutMessage } from './event-log.ts';

export interface ReplayOutcome {
  /** Sent by this run. */
  sent: DeadLetterView[];
  /**
   * Replayed by an earlier run (the ledger says so, or its copy was found after a crash), or another letter of the
   * same source record is: not sent again.
   */
  already: DeadLetterView[];
  /** Cannot be replayed, and why (a truncated letter lacks its bytes; a source partition that is gone). */
  refused: { view: DeadLetterView; why: string }[];
}

export interface ReplayOptions {
  /** Print what would go, send nothing. */
  dryRun?: boolean;
  /** Letters per step (ledger entries, records, ledger entries). */
  batch?: number;
  /** After each step: how many letters are sent so far. */
  onProgress?: (sent: number) => void;
}

/** Why a letter cannot go back, or null when it can. */
function unreplayable(v: DeadLetterView, partitions: Map<string, number>): string | null {
  if (v.truncated) return `truncated (only the head of its ${v.bytes} bytes was kept)`;
  if (!v.source.topic || v.source.partition < 0) return 'no source coordinates in its headers';
  const n = partitions.get(v.source.topic) ?? 0;
  if (v.source.partition >= n) return `source partition ${v.source.topic}/${v.source.partition} does not exist`;
  return null;
}

/** The record a letter goes back as: its key and bytes, its original log timestamp, into its original partition. */
export function replayMessage(d: DeadLetter): OutMessage {
  const { view, message } = d;
  return {
    key: message.key,
    value: message.value,
    partition: view.source.partition,
    // Judged against its original timestamp again, as every reading of the original is (processor.ts).
    timestamp: view.ingestTime > 0 ? String(view.ingestTime) : undefined,
    headers: { [REPLAY_HEADER]: letterId(view.partition, view.offset) },
  };
}

export async function replayDeadLetters(
  log: EventLog,
  namespace: string,
  letters: readonly DeadLetter[],
  { dryRun = false, batch = 500, onProgress }: ReplayOptions = {},
): Promise<ReplayOutcome> {
  const out: ReplayOutcome = { sent: [], already: [], refused: [] };
  const { done, doneSources, begun } = await replayLedger(log, namespace);
  const partitions = new Map<string, number>();
  for (const topic of new Set(letters.map((d) => d.view.source.topic)))
    if (topic) partitions.set(topic, (await log.endOffsets(topic)).length);

  const todo: DeadLetter[] = [];
  const inDoubt: DeadLetter[] = [];
  // A batch repeated after a stream crash can dead-letter one record twice: its record goes back once.
  const sources = new Set(doneSources);
  for (const d of letters) {
    const id = letterId(d.view.partition, d.view.offset);
    const why = unreplayable(d.view, partitions);
    const source = sourceId(d.view.source);
    if (done.has(id) || (!begun.has(id) && sources.has(source))) out.already.push(d.view);
    else if (why) out.refused.push({ view: d.view, why });
    else if (begun.has(id)) inDoubt.push(d);
    else todo.push(d);
    if (!why) sources.add(source);
  }
  if (dryRun) {
    out.sent = [...inDoubt, ...todo].map((d) => d.view);
    return out;
  }
  const ledgerTopic = deadLetterReplaysTopic(namespace);
  await log.ensureTopics([ledgerTopic], 1);
  const producer = log.producer();
  await producer.connect();
  try {
    const mark = (entries: LedgerEntry[]) =>
      producer.send([
        {
          topic: ledgerTopic,
          messages: entries.map((e) => ({ key: e.letter, value: Buffer.from(JSON.stringify(e)) })),
        },
      ]);

    // An earlier run's letters in doubt: those whose copy is in the log are done; the others go with the rest.
    if (inDoubt.length > 0) {
      const found = await copiesInLog(
        log,
        inDoubt.map((d) => begun.get(letterId(d.view.partition, d.view.offset)) as LedgerEntry),
      );
      const landed = inDoubt.filter((d) => found.has(letterId(d.view.partition, d.view.offset)));
      if (landed.length > 0) {
        await mark(
          landed.map((d) => ({
            ...(begun.get(letterId(d.view.partition, d.view.offset)) as LedgerEntry),
            state: 'done',
          })),
        );
        out.already.push(...landed.map((d) => d.view));
      }
      todo.unshift(...inDoubt.filter((d) => !found.has(letterId(d.view.partition, d.view.offset))));
    }

    for (let i = 0; i < todo.length; i += batch) {
      const step = todo.slice(i, i + batch);
      const ends = new Map<string, number>();
      for (const topic of new Set(step.map((d) => d.view.source.topic)))
        for (const p of await log.endOffsets(topic)) ends.set(`${topic}/${p.partition}`, p.offset);
      const entries: LedgerEntry[] = step.map((d) => {
        const { topic, partition } = d.view.source;
        return {
          state: 'begun',
          letter: letterId(d.view.partition, d.view.offset),
          target: { topic, partition, from: ends.get(`${topic}/${partition}`) ?? 0 },
          sourceOffset: d.view.source.offset,
        };
      });
      await mark(entries);
      const byTopic = new Map<string, OutMessage[]>();
      for (const d of step) {
        const messages = byTopic.get(d.view.source.topic) ?? [];
        messages.push(replayMessage(d));
        byTopic.set(d.view.source.topic, messages);
      }
      await producer.send([...byTopic].map(([topic, messages]) => ({ topic, messages })));
      await mark(entries.map((e) => ({ ...e, state: 'done' })));
      out.sent.push(...step.map((d) => d.view));
      onProgress?.(out.sent.length);
    }
  } finally {
    await producer.disconnect();
  }
  return out;
}

/** Which of these begun letters have a copy (a record with their replay_of header) in their target partition. */
async function copiesInLog(log: EventLog, entries: LedgerEntry[]): Promise<Set<string>> {
  const wanted = new Map<string, { topic: string; partition: number; from: number; letters: Set<string> }>();
  for (const e of entries) {
    const key = `${e.target.topic}/${e.target.partition}`;
    const w = wanted.get(key) ?? { ...e.target, letters: new Set<string>() };
    w.from = Math.min(w.from, e.target.from);
    w.letters.add(e.letter);
    wanted.set(key, w);
  }
  const found = new Set<string>();
  for (const w of wanted.values()) {
    for await (const m of readPartition(log, w.topic, w.partition, w.from)) {
      const of = m.headers?.[REPLAY_HEADER];
      if (of && w.letters.has(of)) found.add(of);
    }
  }
  return found;
}
