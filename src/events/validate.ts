// Semantic checks the Avro schema cannot express. Pure: the caller passes "now" so replays judge alike.
import { KEY_FIELDS, KEY_SEPARATOR } from '../features/entities.ts';
import type { AdClick, AdImpression, AdRequest, EventByKind, EventKind, ScoredRanking } from './types.ts';

export const MIN_EVENT_TIME = Date.UTC(2000, 0, 1);
/** Clocks drift; an event more than this ahead of the processing clock is absurd, not early. */
export const MAX_FUTURE_MS = 24 * 3600_000;
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

function badTime(t: unknown, now: number): string | null {
  if (typeof t !== 'number' || !Number.isSafeInteger(t)) return 'not an integer epoch-ms';
  if (t < MIN_EVENT_TIME) return `before ${new Date(MIN_EVENT_TIME).toISOString()}`;
  if (t > now + MAX_FUTURE_MS) return 'more than 24 h in the future';
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

const validators: { [K in EventKind]: (e: EventByKind[K], now: number) => string | null } = {
  impression(e: AdImpression, now) {
    const t = badTime(e.event_time, now);
    if (t) return `event_time ${t}`;
    if (e.position != null && (!Number.isInteger(e.position) || e.position < 1)) return 'position must be >= 1';
    return checkIds(e, ['event_id', ...AD_KEYS]) ?? checkBid(e.bid, '');
  },
  click(e: AdClick, now) {
    const t = badTime(e.event_time, now) ?? badTime(e.impression_time, now);
    if (t) return `event_time or impression_time ${t}`;
    if (e.impression_time > e.event_time) return 'click happens before its impression';
    return checkIds(e, ['event_id', 'impression_id', ...AD_KEYS]);
  },
  request(e: AdRequest, now) {
    const t = badTime(e.event_time, now);
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
  scored(e: ScoredRanking, now) {
    const t = badTime(e.event_time, now);
    if (t) return `event_time ${t}`;
    return checkIds(e, ['request_id', 'model_version']);
  },
};

/** Returns why the event is unusable, or null when it is fine. */
export function validateEvent<K extends EventKind>(kind: K, event: EventByKind[K], now: number): string | null {
  return validators[kind](event, now);
}
