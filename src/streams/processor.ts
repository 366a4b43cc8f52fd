// The streaming stage for one topic partition: decode -> admit (watermark, dedup) -> feature updates, plus what
// each sink needs. No I/O of its own beyond schema lookups; the service applies the outcome to the stores.
import { topicOf } from '../events/catalog.ts';
import { BadEventError, type EventSerde } from '../events/serde.ts';
import type { AdClick, AdImpression } from '../events/types.ts';
import { DEFAULT_MAX_CLOCK_SKEW_MS } from '../events/validate.ts';
import type { Admission, Verdict } from '../features/admission.ts';
import type { FeatureSet } from '../features/compile.ts';
import type { Source } from '../features/define.ts';
import type { ServedRow } from '../offline/sink.ts';
import { ServedView } from './served.ts';

export interface LogMessage {
  offset: string;
  timestamp: string;
  key: Buffer | null;
  value: Buffer | null;
  /** As kafkajs gives them (Buffers), or text (the file log). */
  headers?: Record<string, Buffer | string | (Buffer | string)[] | undefined>;
}

/** Header a replayed dead letter carries (dead-letter-replay.ts): the letter it came from, "partition:offset". */
export const REPLAY_HEADER = 'replay_of';

/** The dead letter a message is a replay of, or undefined for an original. */
export function replayOf(m: Pick<LogMessage, 'headers'>): string | undefined {
  const h = m.headers?.[REPLAY_HEADER];
  return h === undefined ? undefined : String(h);
}

export type { KafkaCoordinates as Coordinates } from '../offline/sink.ts';

import type { KafkaCoordinates as Coordinates } from '../offline/sink.ts';
import type { PartReader } from '../online/contract.ts';
import type { AdmittedEvents } from '../online/part-writer.ts';

export type Recorded<E> = E & Coordinates & { verdict: Verdict };

export interface DeadLetter {
  reason: string;
  key: Buffer | null;
  value: Buffer | null;
  coordinates: Coordinates;
  /** The dead letter this record was a replay of: a replay refused again says so. */
  replayOf?: string;
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
      ...(d.replayOf === undefined ? {} : { [REPLAY_HEADER]: d.replayOf }),
    },
  };
}

export interface BatchOutcome {
  firstOffset: number;
  lastOffset: number;
  /** The events applied, in log order: what the stores' state steps through. */
  admitted: AdmittedEvents;
  impressions: Recorded<AdImpression>[];
  clicks: Recorded<AdClick>[];
  deadLetters: DeadLetter[];
  counts: Record<Verdict | 'invalid', number>;
  /** Of those, the replayed dead letters (dead-letter-replay.ts). */
  replays: Record<Verdict | 'invalid', number>;
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

export interface ProcessOptions {
  /** When given, record the vector each applied impression would have been served, read from here (served.ts). */
  served?: PartReader;
  /** How far an event time may run ahead of its message's log timestamp (DEFAULT_MAX_CLOCK_SKEW_MS). */
  maxClockSkewMs?: number;
  /** Keep each event with its coordinates and verdict for the offline store (default true). */
  recordEvents?: boolean;
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
  { served, maxClockSkewMs = DEFAULT_MAX_CLOCK_SKEW_MS, recordEvents = true }: ProcessOptions = {},
): Promise<BatchOutcome> {
  const out: BatchOutcome = {
    firstOffset: Number(messages[0]?.offset),
    lastOffset: Number(messages[messages.length - 1]?.offset),
    admitted: { source, events: [] },
    impressions: [],
    clicks: [],
    deadLetters: [],
    counts: { applied: 0, late: 0, duplicate: 0, invalid: 0 },
    replays: { applied: 0, late: 0, duplicate: 0, invalid: 0 },
    served: [],
  };
  const coordinatesOf = (m: LogMessage): Coordinates => ({
    topic,
    partition,
    offset: Number(m.offset),
    ingest_time: Number(m.timestamp),
    batch_seq: batchSeq,
  });
  // Decode everything first: a served-vector view must be loaded before the first update is applied. Schemas are
  // looked up once per batch, so each message decodes synchronously.
  await serde.resolve(source, messages);
  const events = new Array<AdImpression | AdClick | undefined>(messages.length);
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as LogMessage;
    try {
      // Judged against the message's own timestamp, not this process's clock: every replay decides alike.
      events[i] = serde.decodeResolved(source, m.value, messageTime(m), maxClockSkewMs) as AdImpression | AdClick;
    } catch (err) {
      if (!(err instanceof BadEventError)) throw err;
      out.counts.invalid++;
      const of = replayOf(m);
      if (of !== undefined) out.replays.invalid++;
      out.deadLetters.push({
        reason: err.reason,
        key: m.key,
        value: m.value,
        coordinates: coordinatesOf(m),
        replayOf: of,
      });
    }
  }
  const view =
    served && source === 'impression'
      ? await ServedView.load(features, served, events.filter((e) => e !== undefined) as AdImpression[])
      : undefined;
  const admitted = out.admitted.events as (AdImpression | AdClick)[];
  /** Per applied impression with a served vector to record: its message. */
  const servedOf: LogMessage[] = [];

  for (let i = 0; i < messages.length; i++) {
    const event = events[i];
    if (!event) continue;
    const m = messages[i] as LogMessage;
    const watermark = admission.watermark;
    const verdict = admission.admit(event.event_id, event.event_time);
    out.counts[verdict]++;
    const of = replayOf(m);
    if (of !== undefined) out.replays[verdict]++;
    if (verdict === 'applied') {
      if (view) servedOf.push(m);
      admitted.push(event);
    } else if (verdict === 'late') {
      const behind = Math.round((watermark - event.event_time) / 1000);
      out.deadLetters.push({
        reason: `late: event_time ${new Date(event.event_time).toISOString()} is ${behind}s behind the watermark (allowed lateness ${admission.allowedLatenessMs / 1000}s)`,
        key: m.key,
        value: m.value,
        coordinates: coordinatesOf(m),
        replayOf: of,
      });
    }
    if (!recordEvents) continue;
    const offset = Number(m.offset);
    const ingest = Number(m.timestamp);
    // Written field by field, not spread: one object of a fixed shape per event (a spread measured slower).
    if (source === 'impression')
      out.impressions.push(impressionRow(event as AdImpression, topic, partition, offset, ingest, batchSeq, verdict));
    else out.clicks.push(clickRow(event as AdClick, topic, partition, offset, ingest, batchSeq, verdict));
  }
  if (view && admitted.length > 0) {
    const F = features.names.length;
    const vectors = view.vectors(admitted as AdImpression[]);
    servedOf.forEach((m, i) => {
      const event = admitted[i] as AdImpression;
      out.served.push({
        ...coordinatesOf(m),
        event_id: event.event_id,
        event_time: event.event_time,
        vector: vectors.subarray(i * F, (i + 1) * F),
      });
    });
  }
  return out;
}

/** An impression as the offline store records it (field by field: one fixed shape). */
export function impressionRow(
  e: AdImpression,
  topic: string,
  partition: number,
  offset: number,
  ingest_time: number,
  batch_seq: number,
  verdict: Verdict,
): Recorded<AdImpression> {
  return {
    event_id: e.event_id,
    event_time: e.event_time,
    request_id: e.request_id,
    user_id: e.user_id,
    ad_id: e.ad_id,
    campaign_id: e.campaign_id,
    advertiser_id: e.advertiser_id,
    category: e.category,
    publisher_id: e.publisher_id,
    device: e.device,
    os: e.os,
    position: e.position,
    bid: e.bid,
    topic,
    partition,
    offset,
    ingest_time,
    batch_seq,
    verdict,
  };
}

/** A click as the offline store records it. */
export function clickRow(
  e: AdClick,
  topic: string,
  partition: number,
  offset: number,
  ingest_time: number,
  batch_seq: number,
  verdict: Verdict,
): Recorded<AdClick> {
  return {
    event_id: e.event_id,
    event_time: e.event_time,
    impression_id: e.impression_id,
    impression_time: e.impression_time,
    user_id: e.user_id,
    ad_id: e.ad_id,
    campaign_id: e.campaign_id,
    advertiser_id: e.advertiser_id,
    category: e.category,
    publisher_id: e.publisher_id,
    device: e.device,
    os: e.os,
    topic,
    partition,
    offset,
    ingest_time,
    batch_seq,
    verdict,
  };
}
