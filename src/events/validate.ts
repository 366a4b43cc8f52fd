// Semantic checks the Avro schema cannot express. Pure: the caller passes "now" so replays judge alike.
import { KEY_FIELDS, KEY_SEPARATOR } from '../features/entities.ts';
import type { AdClick, AdImpression, AdRequest, EventByKind, EventKind, ScoredRanking } from './types.ts';

export const MIN_EVENT_TIME = Date.UTC(2000, 0, 1);
/** Clocks drift; an event more than this ahead of the processing clock is absurd, not early. */
export const MAX_FUTURE_MS = 24 * 3600_000;
/**
 * How far a stream event's time may run ahead of its log timestamp (Kafka's message time, which a Kafka 4 broker
 * keeps within an hour of its own clock) before it is dead-lettered as from the future: one skewed producer clock
 * must not move a partition's watermark ahead and turn its live traffic late.
 */
export const DEFAULT_MAX_CLOCK_SKEW_MS = 10 * 60_000;
const MAX_ID_LENGTH = 256;
/** The largest bid: eCPM = pCTR × bid × 1000 stays finite (and exact enough to order by) for any bid up to it. */
export const MAX_BID = 1e9;
/** Fields that become entity keys (entities.ts), where the separator would let two different tuples meet. */
const KEY_ID_FIELDS = new Set<string>(KEY_FIELDS);

/** Ids are counted in characters (code points), as JSON Schema's maxLength counts them, not UTF-16 units. */
function badId(v: unknown): boolean {
  return typeof v !== 'string' || v.length === 0 || (v.length > MAX_ID_LENGTH && codePoints(v) > MAX_ID_LENGTH);
}

function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** The clock an event is judged against: `now` (epoch ms) and how far ahead of it an event time may be. */
export interface Clock {
  now: number;
  maxFutureMs: number;
}

function badTime(t: unknown, clock: Clock): string | null {
  if (typeof t !== 'number' || !Number.isSafeInteger(t)) return 'not an integer epoch-ms';
  if (t < MIN_EVENT_TIME) return `before ${new Date(MIN_EVENT_TIME).toISOString()}`;
  if (t > clock.now + clock.maxFutureMs)
    return `in the future: ${new Date(t).toISOString()} is ${Math.round((t - clock.now) / 1000)}s ahead of ${new Date(clock.now).toISOString()} (allowed clock skew ${Math.round(clock.maxFutureMs / 1000)}s)`;
  return null;
}

function checkIds(e: object, names: readonly string[]): string | null {
  const rec = e as Record<string, unknown>;
  for (const n of names) {
    const v = rec[n];
    if (badId(v)) return `${n} is empty, missing or longer than ${MAX_ID_LENGTH} characters`;
    if (KEY_ID_FIELDS.has(n) && (v as string).includes(KEY_SEPARATOR))
      return `${n} contains "${KEY_SEPARATOR}", which joins the fields of entity keys`;
  }
  return null;
}

function checkBid(bid: number | null | undefined, where: string): string | null {
  if (bid == null) return null;
  return Number.isFinite(bid) && bid >= 0 && bid <= MAX_BID ? null : `${where}bid must be a number in [0, ${MAX_BID}]`;
}

const AD_KEYS = ['user_id', 'ad_id', 'campaign_id', 'advertiser_id', 'category', 'publisher_id', 'device', 'os'];
const REQUEST_KEYS = ['request_id', 'user_id', 'publisher_id', 'device', 'os'];
/** Checked for each of a request's (up to hundreds of) candidates: one list, not one per candidate. */
const CANDIDATE_KEYS = ['ad_id', 'campaign_id', 'advertiser_id', 'category'];

const validators: { [K in EventKind]: (e: EventByKind[K], clock: Clock) => string | null } = {
  impression(e: AdImpression, clock) {
    const t = badTime(e.event_time, clock);
    if (t) return `event_time ${t}`;
    if (e.position != null && (!Number.isInteger(e.position) || e.position < 1)) return 'position must be >= 1';
    return checkIds(e, ['event_id', ...AD_KEYS]) ?? checkBid(e.bid, '');
  },
  click(e: AdClick, clock) {
    const t = badTime(e.event_time, clock) ?? badTime(e.impression_time, clock);
    if (t) return `event_time or impression_time ${t}`;
    if (e.impression_time > e.event_time) return 'click happens before its impression';
    return checkIds(e, ['event_id', 'impression_id', ...AD_KEYS]);
  },
  request(e: AdRequest, clock) {
    const t = badTime(e.event_time, clock);
    if (t) return `event_time ${t}`;
    const ids = checkIds(e, REQUEST_KEYS);
    if (ids) return ids;
    if (!Array.isArray(e.candidates) || e.candidates.length === 0) return 'candidates must not be empty';
    for (let i = 0; i < e.candidates.length; i++) {
      const c = e.candidates[i] as AdRequest['candidates'][number];
      const bad = checkIds(c, CANDIDATE_KEYS) ?? checkBid(c.bid, '');
      if (bad) return `candidates[${i}]: ${bad}`;
    }
    return null;
  },
  scored(e: ScoredRanking, clock) {
    const t = badTime(e.event_time, clock);
    if (t) return `event_time ${t}`;
    return checkIds(e, ['request_id', 'model_version']);
  },
};

/**
 * Returns why the event is unusable, or null when it is fine. `now` is the clock times are judged against (a
 * number: that instant, allowing MAX_FUTURE_MS ahead).
 */
export function validateEvent<K extends EventKind>(kind: K, event: EventByKind[K], now: number | Clock): string | null {
  return validators[kind](event, typeof now === 'number' ? { now, maxFutureMs: MAX_FUTURE_MS } : now);
}
