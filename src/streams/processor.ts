// The streaming stage for one topic partition: decode -> admit (watermark, dedup) -> feature updates, plus what
// each sink needs. No I/O of its own beyond schema lookups; the service applies the outcome to the stores.
import { topicOf } from '../events/catalog.ts';
import { BadEventError, type EventSerde } from '../events/serde.ts';
import type { AdClick, AdImpression } from '../events/types.ts';
import type { Admission, Verdict } from '../features/admission.ts';
import type { FeatureSet } from '../features/compile.ts';
import type { Source } from '../features/define.ts';
import { TileBatch } from '../features/tile-batch.ts';

export interface LogMessage {
  offset: string;
  timestamp: string;
  key: Buffer | null;
  value: Buffer | null;
}

export interface Coordinates {
  topic: string;
  partition: number;
  offset: number;
  ingest_time: number;
}

export type Recorded<E> = E & Coordinates & { verdict: Verdict };

export interface DeadLetter {
  reason: string;
  key: Buffer | null;
  value: Buffer | null;
  coordinates: Coordinates;
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
  messages: readonly LogMessage[],
  features: FeatureSet,
  serde: EventSerde,
  admission: Admission,
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
  };
  for (const m of messages) {
    const coordinates: Coordinates = { topic, partition, offset: Number(m.offset), ingest_time: Number(m.timestamp) };
    let event: AdImpression | AdClick;
    try {
      event = (await serde.decode(source, m.value)) as AdImpression | AdClick;
    } catch (err) {
      if (!(err instanceof BadEventError)) throw err; // e.g. registry unreachable: retry the batch, don't dead-letter
      out.counts.invalid++;
      out.deadLetters.push({ reason: err.reason, key: m.key, value: m.value, coordinates });
      continue;
    }
    const watermark = admission.watermark;
    const verdict = admission.admit(event.event_id, event.event_time);
    out.counts[verdict]++;
    if (verdict === 'applied') {
      features.apply(source, event, out.tiles);
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
