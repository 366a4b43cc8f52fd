// The streaming stage for one topic partition: decode -> admit (watermark, dedup) -> feature updates, plus what
// each sink needs. No I/O of its own beyond schema lookups; the service applies the outcome to the stores.
import { topicOf } from '../events/catalog.ts';
import { BadEventError, type EventSerde } from '../events/serde.ts';
import type { AdClick, AdImpression } from '../events/types.ts';
import { DEFAULT_MAX_CLOCK_SKEW_MS } from '../events/validate.ts';
import type { Admission, Verdict } from '../features/admission.ts';
import type { FeatureSet } from '../features/compile.ts';
import type { Source } from '../features/define.ts';
import { TeeSink } from '../features/tee-sink.ts';
import { TileBatch } from '../features/tile-batch.ts';
import type { ServedRow } from '../offline/sink.ts';
import { ServedView } from './served.ts';

export interface LogMessage {
  offset: string;
  timestamp: string;
  key: Buffer | null;
  value: Buffer | null;
}

export type { KafkaCoordinates as Coordinates } from '../offline/sink.ts';

import type { KafkaCoordinates as Coordinates } from '../offline/sink.ts';
import type { PartReader } from '../online/contract.ts';

export type Recorded<E> = E & Coordinates & { verdict: Verdict };

export interface DeadLetter {
  reason: string;
  key: Buffer | null;
  value: Buffer | null;
  coordinates: Coordinates;
}

/** A dead letter as a Kafka message: the original bytes, the reason and where they came from in headers. */
export function deadLetterMessage(d: DeadLetter) {
  return {
    key: d.key,
    value: d.value,
    headers: {
      reason: d.reason,
      source_topic: d.coordinates.topic,
      source_partition: String(d.coordinates.partition),
      source_offset: String(d.coordinates.offset),
      ingest_time: String(d.coordinates.ingest_time),
    },
  };
}

export interface BatchOutcome {
  firstOffset: number;
  lastOffset: number;
  tiles: TileBatch;
  impressions: Recorded<AdImpression>[];
  clicks: Recorded<AdClick>[];
  deadLetters: DeadLetter[];
  counts: Record<Verdict | 'invalid', number>;
  newestEventTime: number;
  served: ServedRow[];
}

/** A message's log timestamp (epoch ms); a log without one (none of ours) is judged by this process's clock. */
export function messageTime(m: Pick<LogMessage, 'timestamp'>): number {
  const t = Number(m.timestamp);
  return Number.isFinite(t) && t > 0 ? t : Date.now();
}

export function sourceTopics(namespace: string): Record<Source, string> {
  return { impression: topicOf('impression', namespace), click: topicOf('click', namespace) };
}

/**
 * Processes messages of one partition, in offset order. Mutates `admission` (the partition's event-time state);
 * run it on the admission restored from the checkpoint at `messages[0]` to reproduce a batch exactly.
 */
export async function processBatch(
  source: Source,
  topic: string,
  partition: number,
  batchSeq: number,
  messages: readonly LogMessage[],
  features: FeatureSet,
  serde: EventSerde,
  admission: Admission,
  /** When given, record the vector each applied impression would have been served (see served.ts). */
  served?: PartReader,
  /** How far an event time may run ahead of its message's log timestamp (DEFAULT_MAX_CLOCK_SKEW_MS). */
  maxClockSkewMs = DEFAULT_MAX_CLOCK_SKEW_MS,
): Promise<BatchOutcome> {
  const out: BatchOutcome = {
    firstOffset: Number(messages[0]?.offset),
    lastOffset: Number(messages[messages.length - 1]?.offset),
    tiles: new TileBatch(),
    impressions: [],
    clicks: [],
    deadLetters: [],
    counts: { applied: 0, late: 0, duplicate: 0, invalid: 0 },
    newestEventTime: 0,
    served: [],
  };
  // Decode everything first: a served-vector view must be loaded before the first update is applied.
  const decoded: { m: LogMessage; coordinates: Coordinates; event?: AdImpression | AdClick }[] = [];
  for (const m of messages) {
    const coordinates: Coordinates = {
      topic,
      partition,
      offset: Number(m.offset),
      ingest_time: Number(m.timestamp),
      batch_seq: batchSeq,
    };
    try {
      // Judged against the message's own timestamp, not this process's clock: every replay decides alike.
      const clock = { now: messageTime(m), maxFutureMs: maxClockSkewMs };
      decoded.push({ m, coordinates, event: (await serde.decode(source, m.value, clock)) as AdImpression | AdClick });
    } catch (err) {
      if (!(err instanceof BadEventError)) throw err; // e.g. registry unreachable: retry the batch, don't dead-letter
      out.counts.invalid++;
      out.deadLetters.push({ reason: err.reason, key: m.key, value: m.value, coordinates });
    }
  }
  const view =
    served && source === 'impression'
      ? await ServedView.load(features, served, decoded.map((d) => d.event as AdImpression).filter(Boolean))
      : undefined;
  const sink = view ? new TeeSink(out.tiles, view.view) : out.tiles;

  for (const { m, coordinates, event } of decoded) {
    if (!event) continue;
    const watermark = admission.watermark;
    const verdict = admission.admit(event.event_id, event.event_time);
    out.counts[verdict]++;
    if (verdict === 'applied') {
      if (view)
        out.served.push({
          ...coordinates,
          event_id: event.event_id,
          event_time: event.event_time,
          vector: view.vector(event as AdImpression),
        });
      features.apply(source, event, sink);
      if (event.event_time > out.newestEventTime) out.newestEventTime = event.event_time;
    } else if (verdict === 'late') {
      const behind = Math.round((watermark - event.event_time) / 1000);
      out.deadLetters.push({
        reason: `late: event_time ${new Date(event.event_time).toISOString()} is ${behind}s behind the watermark (allowed lateness ${admission.allowedLatenessMs / 1000}s)`,
        key: m.key,
        value: m.value,
        coordinates,
      });
    }
    const row = { ...event, ...coordinates, verdict };
    if (source === 'impression') out.impressions.push(row as Recorded<AdImpression>);
    else out.clicks.push(row as Recorded<AdClick>);
  }
  return out;
}
