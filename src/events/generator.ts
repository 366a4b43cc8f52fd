// A seeded, realistic ad-traffic generator: Zipf-popular ads and users, daily seasonality, and a hidden click
// probability (ad quality + user×category affinity + context) so a model has something to learn. It also makes
// the mess real logs have: delivery jitter (out of order), late deliveries, and duplicate sends.
import { hash32, hashedNormal, Rng, Zipf } from './random.ts';
import type { AdClick, AdImpression, AdRequest, AnyEvent, Candidate } from './types.ts';

export interface GeneratorOptions {
  seed: number;
  /** Event time of the first day's midnight, epoch ms (UTC). */
  start: number;
  days: number;
  impressionsPerDay: number;
  users: number;
  ads: number;
  campaigns: number;
  advertisers: number;
  categories: number;
  publishers: number;
  /** Share of events delivered minutes to hours after their event time. */
  lateShare: number;
  /** Share of events sent twice (same event id). */
  duplicateShare: number;
  /** Normal delivery delay is uniform in [0, jitterMs): enough to reorder neighbours. */
  jitterMs: number;
  /** Emit the AdRequest behind each impression, with this many candidates (0 = no requests). */
  candidatesPerRequest: number;
}

export const DEFAULT_GENERATOR_OPTIONS: GeneratorOptions = {
  seed: 42,
  start: Date.UTC(2026, 10, 1),
  days: 3,
  impressionsPerDay: 50_000,
  users: 20_000,
  ads: 2_000,
  campaigns: 300,
  advertisers: 80,
  categories: 24,
  publishers: 60,
  lateShare: 0.02,
  duplicateShare: 0.01,
  jitterMs: 3_000,
  candidatesPerRequest: 0,
};

/** An event and when the log received it (its Kafka timestamp); logs are in ingestion order. */
export interface LogRecord {
  record: AnyEvent;
  ingestTime: number;
}

const DEVICES = ['mobile', 'desktop', 'tablet'];
const OSES = ['android', 'ios', 'windows', 'macos', 'linux'];
const HOUR_MS = 3600_000;
const DAY_MS = 24 * HOUR_MS;
/** Traffic by hour of day (UTC): low at night, peak in the evening. */
const HOURLY = Array.from({ length: 24 }, (_, h) => 1 + 0.8 * Math.sin(((h - 14) / 24) * 2 * Math.PI));

interface Ad {
  id: string;
  campaign: string;
  advertiser: string;
  category: number;
  quality: number;
  bid: number;
}

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

function buildAds(o: GeneratorOptions, rng: Rng): Ad[] {
  const campaignAdvertiser = Array.from({ length: o.campaigns }, () => rng.int(o.advertisers));
  const campaignZipf = new Zipf(o.campaigns, 0.8);
  return Array.from({ length: o.ads }, (_, i) => {
    const c = campaignZipf.sample(rng);
    return {
      id: `ad-${i}`,
      campaign: `cmp-${c}`,
      advertiser: `adv-${campaignAdvertiser[c]}`,
      category: rng.int(o.categories),
      quality: rng.normal() * 0.6,
      bid: Math.round((0.05 + rng.exponential(0.6)) * 100) / 100,
    };
  });
}

function asCandidate(ad: Ad): Candidate {
  return {
    ad_id: ad.id,
    campaign_id: ad.campaign,
    advertiser_id: ad.advertiser,
    category: `cat-${ad.category}`,
    bid: ad.bid,
  };
}

function sampleHour(rng: Rng, cumulative: number[]): number {
  const u = rng.next() * (cumulative[23] as number);
  let h = 0;
  while ((cumulative[h] as number) < u) h++;
  return h;
}

/** Generates the whole log, sorted by ingestion time (ties keep generation order). Same options, same log. */
export function generate(options: Partial<GeneratorOptions> = {}): LogRecord[] {
  const o = { ...DEFAULT_GENERATOR_OPTIONS, ...options };
  const rng = new Rng(o.seed);
  const ads = buildAds(o, rng);
  const adZipf = new Zipf(o.ads, 1.05);
  const userZipf = new Zipf(o.users, 0.7);
  const pubZipf = new Zipf(o.publishers, 1.1);
  const cumulative: number[] = [];
  HOURLY.reduce((acc, w, h) => (cumulative[h] = acc + w), 0);

  const out: { rec: LogRecord; seq: number }[] = [];
  let seq = 0;
  const emit = (record: AnyEvent, eventTime: number) => {
    const late = rng.next() < o.lateShare;
    const delay = late ? 60_000 + rng.int(3 * HOUR_MS) : rng.int(o.jitterMs);
    out.push({ rec: { record, ingestTime: eventTime + delay }, seq: seq++ });
    if (rng.next() < o.duplicateShare) {
      out.push({ rec: { record, ingestTime: eventTime + delay + rng.int(10 * 60_000) }, seq: seq++ });
    }
  };

  const total = Math.round(o.impressionsPerDay * o.days);
  for (let i = 0; i < total; i++) {
    const day = rng.int(o.days);
    const t = o.start + day * DAY_MS + sampleHour(rng, cumulative) * HOUR_MS + rng.int(HOUR_MS);
    const u = userZipf.sample(rng);
    const ad = ads[adZipf.sample(rng)] as Ad;
    const pub = pubZipf.sample(rng);
    const device = DEVICES[hash32(o.seed, u, 7) % DEVICES.length] as string;
    const os = OSES[hash32(o.seed, u, 8) % OSES.length] as string;
    const position = 1 + rng.int(4);
    const hour = new Date(t).getUTCHours();
    const logit =
      -3.3 +
      ad.quality +
      0.9 * hashedNormal(o.seed, u, ad.category) +
      0.3 * hashedNormal(o.seed, 1_000_000 + pub) -
      0.25 * (position - 1) +
      (device === 'mobile' ? 0.15 : 0) +
      0.2 * Math.sin(((hour - 18) / 24) * 2 * Math.PI);
    const user_id = `u-${u}`;
    const category = `cat-${ad.category}`;
    const publisher_id = `pub-${pub}`;
    const event_id = `imp-${o.seed}-${i}`;
    let request_id: string | null = null;

    if (o.candidatesPerRequest > 0) {
      request_id = `req-${o.seed}-${i}`;
      const candidates: Candidate[] = [asCandidate(ad)];
      for (let k = 1; k < o.candidatesPerRequest; k++) candidates.push(asCandidate(ads[adZipf.sample(rng)] as Ad));
      const request: AdRequest = {
        request_id,
        event_time: t - 20,
        user_id,
        publisher_id,
        category,
        device,
        os,
        candidates,
      };
      emit({ kind: 'request', event: request }, request.event_time);
    }

    const impression: AdImpression = {
      event_id,
      event_time: t,
      request_id,
      user_id,
      ad_id: ad.id,
      campaign_id: ad.campaign,
      advertiser_id: ad.advertiser,
      category,
      publisher_id,
      device,
      os,
      position,
      bid: ad.bid,
    };
    emit({ kind: 'impression', event: impression }, t);

    if (rng.next() < sigmoid(logit)) {
      const click: AdClick = {
        event_id: `clk-${o.seed}-${i}`,
        event_time: t + 1000 + Math.round(rng.exponential(20_000)),
        impression_id: event_id,
        impression_time: t,
        user_id,
        ad_id: ad.id,
        campaign_id: ad.campaign,
        advertiser_id: ad.advertiser,
        category,
        publisher_id,
        device,
        os,
      };
      emit({ kind: 'click', event: click }, click.event_time);
    }
  }
  out.sort((a, b) => a.rec.ingestTime - b.rec.ingestTime || a.seq - b.seq);
  return out.map((x) => x.rec);
}
