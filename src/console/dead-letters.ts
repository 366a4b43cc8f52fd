// The Pipeline page's dead letters, kept up to date by reading only what is new. The page polls every few seconds;
// on Kafka each ranged read is a throwaway consumer group (a group join, seconds on a broker with the default
// group.initial.rebalance.delay.ms), so reading the whole topic per poll would hold the page's lag table back and
// grow with the topic. Here a poll costs the topics' end offsets; letters are read once each, and the count is
// taken afresh only when the replay ledger moved (which letters count as replayed changed).
import { deadLetterReplaysTopic, deadLetterTopic } from '../events/catalog.ts';
import {
  type DeadLetterSummary,
  DeadLetterTally,
  readPartition,
  replayLedger,
  viewOf,
} from '../streams/dead-letter-reader.ts';
import type { EventLog } from '../streams/event-log.ts';

export class DeadLetterWatch {
  private tally: DeadLetterTally;
  /** Per dead-letter partition, the next offset to read. */
  private readonly next = new Map<number, number>();
  private replayed = new Set<string>();
  /** The replay ledger's end offsets when `replayed` was read. */
  private ledgerAt: string | undefined;
  private reading: Promise<void> | undefined;

  constructor(
    private readonly log: EventLog,
    private readonly namespace: string,
    private readonly examples = 3,
  ) {
    this.tally = new DeadLetterTally(examples);
  }

  /** By reason class (most first) with a few examples, as summarizeDeadLetters gives; concurrent calls share a read. */
  async summary(): Promise<DeadLetterSummary[]> {
    this.reading ??= this.catchUp().finally(() => {
      this.reading = undefined;
    });
    await this.reading;
    return this.tally.reasons();
  }

  private async catchUp(): Promise<void> {
    const ledgerAt = JSON.stringify(await this.log.endOffsets(deadLetterReplaysTopic(this.namespace)));
    if (ledgerAt !== this.ledgerAt) {
      const { done } = await replayLedger(this.log, this.namespace);
      this.tally = new DeadLetterTally(this.examples);
      this.next.clear();
      this.replayed = done;
      this.ledgerAt = ledgerAt;
    }
    const topic = deadLetterTopic(this.namespace);
    const ends = (await this.log.endOffsets(topic)).sort((a, b) => a.partition - b.partition);
    for (const { partition, offset: end } of ends) {
      const from = this.next.get(partition) ?? 0;
      if (from >= end) continue;
      for await (const m of readPartition(this.log, topic, partition, from)) {
        this.tally.add(viewOf(partition, m, this.replayed));
        this.next.set(partition, Number(m.offset) + 1);
      }
      // Every letter below `end` has been read; offsets with no message (a transaction's markers) are not read again.
      this.next.set(partition, Math.max(this.next.get(partition) ?? 0, end));
    }
  }
}
