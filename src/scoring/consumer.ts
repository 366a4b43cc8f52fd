// `tributary score`: AdRequest events from the requests topic -> the same Ranker as POST /v1/rank ->
// ScoredRanking events on the scored topic. Undecodable or invalid requests go to the dead-letter topic with the
// reason. Runs over Kafka or the embedded file log (one EventLog interface). At least once: a batch's offsets are committed after its rankings and dead letters are acknowledged.
import type { Logger } from 'pino';
import { deadLetterTopic, topicOf } from '../events/catalog.ts';
import { BadEventError, type EventSerde } from '../events/serde.ts';
import type { AdRequest, ScoredRanking } from '../events/types.ts';
import { EventPublisher } from '../kafka/publish.ts';
import type { EventLog, LogBatchPayload, LogConsumer, LogProducer } from '../streams/event-log.ts';
import { reasonClass } from '../streams/metrics.ts';
import { type DeadLetter, deadLetterMessage } from '../streams/processor.ts';
import type { ScoringMetrics } from './metrics.ts';
import type { Ranker, Ranking } from './ranker.ts';

export interface ScoreConsumerDeps {
  eventLog: EventLog;
  serde: EventSerde;
  ranker: Ranker;
  /** Whether a model is in service; requests wait (not dead-lettered) until one is. */
  hasModel(): boolean;
  metrics: ScoringMetrics;
  log: Logger;
}

export interface ScoreConsumerOptions {
  namespace: string;
  groupId: string;
  maxCandidates: number;
  /** Rankings in flight at once within a batch. */
  concurrency: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class ScoreConsumer {
  private readonly consumer: LogConsumer;
  private readonly producer: LogProducer;
  scored = 0;
  deadLettered = 0;

  constructor(
    private readonly deps: ScoreConsumerDeps,
    private readonly options: ScoreConsumerOptions,
  ) {
    this.consumer = deps.eventLog.consumer(options.groupId);
    this.producer = deps.eventLog.producer();
  }

  async start(): Promise<void> {
    await this.deps.serde.prepare(['request', 'scored']);
    await this.producer.connect();
    await this.consumer.start(
      [topicOf('request', this.options.namespace)],
      (payload) => this.onBatch(payload),
      () => {},
    );
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect();
    await this.producer.disconnect();
  }

  private async onBatch({ batch, resolveOffset, heartbeat, isRunning }: LogBatchPayload): Promise<void> {
    while (!this.deps.hasModel()) {
      if (!isRunning()) return;
      await heartbeat();
      await sleep(500);
    }
    const publisher = new EventPublisher(this.producer, this.deps.serde, this.options.namespace);
    const letters: DeadLetter[] = [];
    const requests: AdRequest[] = [];
    for (const m of batch.messages) {
      try {
        const req = await this.deps.serde.decode('request', m.value);
        if (req.candidates.length > this.options.maxCandidates)
          throw new BadEventError(
            `invalid request: ${req.candidates.length} candidates, more than the limit of ${this.options.maxCandidates}`,
          );
        requests.push(req);
      } catch (err) {
        if (!(err instanceof BadEventError)) throw err; // e.g. registry unreachable: kafkajs retries the batch
        letters.push({
          reason: err.reason,
          key: m.key,
          value: m.value,
          coordinates: {
            topic: batch.topic,
            partition: batch.partition,
            offset: Number(m.offset),
            ingest_time: Number(m.timestamp),
            batch_seq: 0,
          },
        });
      }
    }
    for (let i = 0; i < requests.length; i += this.options.concurrency) {
      const rankings = await Promise.all(
        requests.slice(i, i + this.options.concurrency).map((r) => this.deps.ranker.rank(r)),
      );
      for (const r of rankings) await publisher.add({ record: { kind: 'scored', event: scoredOf(r) } });
      await heartbeat();
    }
    await publisher.flush();
    if (letters.length) {
      await this.producer.send([
        { topic: deadLetterTopic(this.options.namespace), messages: letters.map(deadLetterMessage) },
      ]);
      for (const d of letters) this.deps.metrics.rejected.inc({ reason: reasonClass(d.reason) });
    }
    this.scored += requests.length;
    this.deadLettered += letters.length;
    const last = batch.messages[batch.messages.length - 1];
    if (last) resolveOffset(last.offset);
  }
}

/** The wire form of a ranking (the per-candidate `unknown` lists are for the HTTP answer only). */
function scoredOf(r: Ranking): ScoredRanking {
  return {
    request_id: r.request_id,
    event_time: r.event_time,
    scored_time: r.scored_time,
    model_version: r.model_version,
    features_defaulted: r.features_defaulted,
    ranked: r.ranked.map(({ ad_id, rank, pctr, bid, ecpm }) => ({ ad_id, rank, pctr, bid, ecpm })),
  };
}
