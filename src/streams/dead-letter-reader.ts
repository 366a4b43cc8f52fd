// Reading the dead-letter topic back: each letter as a view (its coordinates, the source record's, the reason), the
// letters summarised by reason class with a few examples, and which of them a replay has sent back already (the
// replay ledger, dead-letter-replay.ts). Works on any EventLog (Kafka or the file log) through its ranged read.
import { deadLetterReplaysTopic, deadLetterTopic } from '../events/catalog.ts';
import type { EventLog, ReadMessage } from './event-log.ts';
import { reasonClass } from './metrics.ts';
import { REPLAY_HEADER } from './processor.ts';

export { REPLAY_HEADER } from './processor.ts';

/** Messages per ranged read. */
const READ_CHUNK = 5_000;

export interface DeadLetterView {
  /** Coordinates in the dead-letter topic. */
  partition: number;
  offset: number;
  /** When it was dead-lettered (the letter's log timestamp, epoch ms). */
  time: number;
  reason: string;
  reasonClass: string;
  source: { topic: string; partition: number; offset: number };
  /** The source record's log timestamp (epoch ms), as the stream judged it. */
  ingestTime: number;
  /** The original value's size; a truncated letter holds only its head (see dead-letters.ts). */
  bytes: number;
  truncated: boolean;
  replayed: boolean;
  /** Set when the source record was itself a replay: the dead letter it came from ("partition:offset"). */
  replayOf?: string;
}

export interface DeadLetterSummary {
  reasonClass: string;
  count: number;
  replayed: number;
  examples: DeadLetterView[];
}

export interface DeadLetterFilter {
  /** A reason class ("late", "unknown schema id"), or text the full reason contains. */
  reason?: string;
  /** Source topic, with or without the namespace prefix. */
  topic?: string;
  /** Dead-lettered at or after this time (epoch ms). */
  since?: number;
  /** Only these letters ("partition:offset"). */
  ids?: ReadonlySet<string>;
}

export interface DeadLetter {
  view: DeadLetterView;
  message: ReadMessage;
}

export const letterId = (partition: number, offset: number) => `${partition}:${offset}`;

/** "2:17" -> { partition: 2, offset: 17 }, or undefined when it is not that shape. */
export function parseLetterId(text: string): { partition: number; offset: number } | undefined {
  const m = /^(\d+):(\d+)$/.exec(text.trim());
  return m ? { partition: Number(m[1]), offset: Number(m[2]) } : undefined;
}

function int(v: string | undefined): number {
  const n = Number(v);
  return Number.isFinite(n) ? n : -1;
}

/** A dead-letter message as a view; `replayed` as the ledger says. */
export function viewOf(partition: number, m: ReadMessage, replayed: ReadonlySet<string>): DeadLetterView {
  const h = m.headers ?? {};
  const reason = h.reason ?? '(no reason header)';
  const truncated = h.truncated === 'true';
  const view: DeadLetterView = {
    partition,
    offset: Number(m.offset),
    time: Number(m.timestamp),
    reason,
    reasonClass: reasonClass(reason),
    source: { topic: h.source_topic ?? '', partition: int(h.source_partition), offset: int(h.source_offset) },
    ingestTime: int(h.ingest_time),
    bytes: truncated ? int(h.original_size) : (m.value?.length ?? 0),
    truncated,
    replayed: replayed.has(letterId(partition, Number(m.offset))),
  };
  if (h[REPLAY_HEADER]) view.replayOf = h[REPLAY_HEADER];
  return view;
}

function matches(v: DeadLetterView, f: DeadLetterFilter, namespace: string): boolean {
  if (f.ids && !f.ids.has(letterId(v.partition, v.offset))) return false;
  if (f.since !== undefined && v.time < f.since) return false;
  if (f.topic !== undefined && v.source.topic !== f.topic && v.source.topic !== `${namespace}${f.topic}`) return false;
  if (f.reason !== undefined && v.reasonClass !== f.reason && !v.reason.includes(f.reason)) return false;
  return true;
}

/** Every message of a partition from `from` to its end (as of each chunk's read), a chunk at a time. */
export async function* readPartition(log: EventLog, topic: string, partition: number, from = 0) {
  let next = from;
  while (true) {
    const chunk = await log.read(topic, partition, next, READ_CHUNK);
    if (chunk.length === 0) return;
    yield* chunk;
    next = Number(chunk[chunk.length - 1]?.offset) + 1;
    if (chunk.length < READ_CHUNK) return;
  }
}

/** The topic's partitions; none when it does not exist (yet). */
async function partitionsOf(log: EventLog, topic: string): Promise<number[]> {
  return (await log.endOffsets(topic)).map((p) => p.partition).sort((a, b) => a - b);
}

/** The namespace's dead letters matching `filter`, in (partition, offset) order. */
export async function* readDeadLetters(
  log: EventLog,
  namespace: string,
  filter: DeadLetterFilter = {},
  replayed?: ReadonlySet<string>,
): AsyncGenerator<DeadLetter> {
  const done = replayed ?? (await replayLedger(log, namespace)).done;
  const topic = deadLetterTopic(namespace);
  for (const partition of await partitionsOf(log, topic)) {
    for await (const message of readPartition(log, topic, partition)) {
      const view = viewOf(partition, message, done);
      if (matches(view, filter, namespace)) yield { view, message };
    }
  }
}

/** One dead letter by its coordinates, or undefined when the topic has no such offset. */
export async function readDeadLetter(
  log: EventLog,
  namespace: string,
  partition: number,
  offset: number,
): Promise<DeadLetter | undefined> {
  const topic = deadLetterTopic(namespace);
  if (!(await partitionsOf(log, topic)).includes(partition)) return undefined;
  const [message] = await log.read(topic, partition, offset, 1);
  if (!message || Number(message.offset) !== offset) return undefined;
  const { done } = await replayLedger(log, namespace);
  return { view: viewOf(partition, message, done), message };
}

/** A ledger entry: a replay begun (before its records are sent) or done (after they are acknowledged). */
export interface LedgerEntry {
  state: 'begun' | 'done';
  /** The dead letter ("partition:offset"). */
  letter: string;
  /** Where its record goes, and that partition's end offset before the replay began: the copy lies at or after it. */
  target: { topic: string; partition: number; from: number };
  /** The original's offset in that partition (two letters of one record, from a batch repeated after a crash). */
  sourceOffset: number;
}

/** A source record's coordinates as one string: "topic/partition@offset". */
export const sourceId = (s: { topic: string; partition: number; offset: number }) =>
  `${s.topic}/${s.partition}@${s.offset}`;

export interface ReplayLedger {
  /** Letters replayed (their records acknowledged by the log). */
  done: Set<string>;
  /** The source records of those letters (sourceId). */
  doneSources: Set<string>;
  /** Letters whose replay began but is not known to have finished (a replay that crashed): in doubt. */
  begun: Map<string, LedgerEntry>;
}

export async function replayLedger(log: EventLog, namespace: string): Promise<ReplayLedger> {
  const topic = deadLetterReplaysTopic(namespace);
  const done = new Set<string>();
  const doneSources = new Set<string>();
  const begun = new Map<string, LedgerEntry>();
  for (const partition of await partitionsOf(log, topic)) {
    for await (const m of readPartition(log, topic, partition)) {
      const e = JSON.parse(String(m.value)) as LedgerEntry;
      if (e.state === 'done') {
        done.add(e.letter);
        doneSources.add(sourceId({ ...e.target, offset: e.sourceOffset }));
        begun.delete(e.letter);
      } else if (!done.has(e.letter)) begun.set(e.letter, e);
    }
  }
  return { done, doneSources, begun };
}

/** Letters counted as they are read: by reason class (with the first few of each as examples) and by source topic. */
export class DeadLetterTally {
  total = 0;
  private readonly byClass = new Map<string, DeadLetterSummary>();
  private readonly byTopic = new Map<string, { topic: string; count: number; replayed: number }>();

  constructor(private readonly examples = 3) {}

  add(view: DeadLetterView): void {
    this.total++;
    let s = this.byClass.get(view.reasonClass);
    if (!s) {
      s = { reasonClass: view.reasonClass, count: 0, replayed: 0, examples: [] };
      this.byClass.set(view.reasonClass, s);
    }
    let t = this.byTopic.get(view.source.topic);
    if (!t) {
      t = { topic: view.source.topic, count: 0, replayed: 0 };
      this.byTopic.set(view.source.topic, t);
    }
    s.count++;
    t.count++;
    if (view.replayed) {
      s.replayed++;
      t.replayed++;
    }
    if (s.examples.length < this.examples) s.examples.push(view);
  }

  /** By reason class, most first. */
  reasons(): DeadLetterSummary[] {
    return [...this.byClass.values()].sort((a, b) => b.count - a.count || a.reasonClass.localeCompare(b.reasonClass));
  }

  /** By source topic, most first. */
  topics(): { topic: string; count: number; replayed: number }[] {
    return [...this.byTopic.values()].sort((a, b) => b.count - a.count || a.topic.localeCompare(b.topic));
  }
}

/** The namespace's dead letters by reason class (most first), with counts and a few examples (default 3). */
export async function summarizeDeadLetters(
  log: EventLog,
  namespace: string,
  { examples = 3, filter = {} }: { examples?: number; filter?: DeadLetterFilter } = {},
): Promise<DeadLetterSummary[]> {
  const tally = new DeadLetterTally(examples);
  for await (const { view } of readDeadLetters(log, namespace, filter)) tally.add(view);
  return tally.reasons();
}
