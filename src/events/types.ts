// Event shapes, mirroring schemas/*.avsc (the Avro schemas are the source of truth on the wire).

export interface AdImpression {
  event_id: string;
  event_time: number;
  request_id: string | null;
  user_id: string;
  ad_id: string;
  campaign_id: string;
  advertiser_id: string;
  category: string;
  publisher_id: string;
  device: string;
  os: string;
  position: number | null;
  bid: number | null;
}

export interface AdClick {
  event_id: string;
  event_time: number;
  impression_id: string;
  impression_time: number;
  user_id: string;
  ad_id: string;
  campaign_id: string;
  advertiser_id: string;
  category: string;
  publisher_id: string;
  device: string;
  os: string;
}

export interface Candidate {
  ad_id: string;
  campaign_id: string;
  advertiser_id: string;
  category: string;
  bid: number | null;
}

export interface AdRequest {
  request_id: string;
  event_time: number;
  user_id: string;
  publisher_id: string;
  category: string | null;
  device: string;
  os: string;
  candidates: Candidate[];
}

export interface ScoredCandidate {
  ad_id: string;
  rank: number;
  pctr: number;
  bid: number | null;
  ecpm: number | null;
}

export interface ScoredRanking {
  request_id: string;
  event_time: number;
  scored_time: number;
  model_version: string;
  features_defaulted: boolean;
  ranked: ScoredCandidate[];
}

export interface EventByKind {
  impression: AdImpression;
  click: AdClick;
  request: AdRequest;
  scored: ScoredRanking;
}

export type EventKind = keyof EventByKind;

/** An event with its kind, as carried through files and the generator. */
export type AnyEvent = { [K in EventKind]: { kind: K; event: EventByKind[K] } }[EventKind];

export const EVENT_KINDS: readonly EventKind[] = ['impression', 'click', 'request', 'scored'];
