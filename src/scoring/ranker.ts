// The ranking core shared by POST /v1/rank and `tributary score`: a request's candidates -> one read plan -> one
// online-store round trip (bounded by a timeout; defaults when the store is slow or down) -> the vectors the
// backfill builds for training rows -> one batched ONNX run -> candidates ordered by eCPM = pCTR × bid × 1000 (or pCTR).
import type { Logger } from 'pino';
import type { AdRequest, ScoredCandidate, ScoredRanking } from '../events/types.ts';
import type { CompiledGroup, FeatureSet } from '../features/compile.ts';
import type { KeyFields } from '../features/entities.ts';
import type { ReadPlan, ReadRequest, ReadResult } from '../features/read-plan.ts';
import type { FeatureReader } from '../online/contract.ts';
import type { ScoringMetrics } from './metrics.ts';
import type { ServedModel } from './model-runtime.ts';
import type { ServedLog } from './served-log.ts';

export interface RankedCandidate extends ScoredCandidate {
  /** Entities with no stored data in any window read (their features are the definitions' defaults). */
  unknown: string[];
}

export interface Ranking extends ScoredRanking {
  ranked: RankedCandidate[];
}

/** No model has loaded yet: the service is not ready (not the client's mistake). */
export class NoModelError extends Error {
  constructor(reason?: string) {
    super(`no model in service${reason ? `: ${reason}` : ''}`);
  }
}

export interface RankerOptions {
  /** Longest wait for the online store; past it the ranking uses defaults and says so. */
  readTimeoutMs: number;
}

export interface RankerDeps {
  features: FeatureSet;
  reader: FeatureReader;
  models: { readonly model: ServedModel | undefined; readonly refusal?: { reason: string } | undefined };
  metrics: ScoringMetrics;
  log: Logger;
  served?: ServedLog;
}

/** A candidate whose entities all have data: one shared list (frozen: never changed). */
const NONE = Object.freeze([]) as unknown as string[];

export class Ranker {
  private readonly width: number;

  constructor(
    private readonly deps: RankerDeps,
    private readonly options: RankerOptions,
  ) {
    this.width = deps.features.names.length;
  }

  async rank(req: AdRequest): Promise<Ranking> {
    const model = this.deps.models.model?.acquire();
    if (!model) throw new NoModelError(this.deps.models.refusal?.reason);
    try {
      return await this.rankWith(model, req);
    } finally {
      model.done();
    }
  }

  private async rankWith(model: ServedModel, req: AdRequest): Promise<Ranking> {
    const { features, metrics } = this.deps;
    const n = req.candidates.length;
    const contexts: KeyFields[] = req.candidates.map((c) => ({
      user_id: req.user_id,
      publisher_id: req.publisher_id,
      ad_id: c.ad_id,
      campaign_id: c.campaign_id,
      advertiser_id: c.advertiser_id,
      category: c.category,
    }));
    const plan = features.plan(contexts, req.event_time);

    const t0 = performance.now();
    const stored = await this.readWithin(plan.requests);
    const t1 = performance.now();
    const results = stored ?? plan.requests.map(defaultsOf);
    // Assembled exactly as the backfill's rows (float64: what the served-vector log records), run in float32.
    const vectors = new Float64Array(n * this.width);
    features.assembleInto(plan, results, vectors);
    const batch = new Float32Array(vectors);
    const t2 = performance.now();
    const pctr = await model.score(batch, n, this.width);
    const t3 = performance.now();
    metrics.stage.observe({ stage: 'valkey' }, (t1 - t0) / 1000);
    metrics.stage.observe({ stage: 'assembly' }, (t2 - t1) / 1000);
    metrics.stage.observe({ stage: 'onnx' }, (t3 - t2) / 1000);
    metrics.rankings.inc({ features: stored ? 'store' : 'defaults' });
    metrics.candidates.inc(n);

    const groups = plan.refs.length / n;
    const unknownOf = unknownEntities(features, plan, results);
    const allBid = req.candidates.every((c) => c.bid != null);
    const ranked: RankedCandidate[] = req.candidates.map((c, i) => {
      const p = pctr[i] as number;
      let unknown = NONE;
      for (let g = 0; g < groups; g++) {
        const name = unknownOf[plan.refs[i * groups + g] as number] as string | null;
        if (name === null) continue;
        if (unknown === NONE) unknown = [];
        unknown.push(name);
      }
      return { ad_id: c.ad_id, rank: 0, pctr: p, bid: c.bid, ecpm: c.bid == null ? null : p * c.bid * 1000, unknown };
    });
    // eCPM only orders a ranking when every candidate has a bid; a mix would compare money with probabilities.
    const order = allBid
      ? (a: RankedCandidate, b: RankedCandidate) => (b.ecpm as number) - (a.ecpm as number)
      : (a: RankedCandidate, b: RankedCandidate) => b.pctr - a.pctr;
    ranked.sort(order);
    ranked.forEach((c, i) => {
      c.rank = i + 1;
    });
    const ranking: Ranking = {
      request_id: req.request_id,
      event_time: req.event_time,
      scored_time: Date.now(),
      model_version: model.version,
      features_defaulted: stored === null,
      ranked,
    };
    this.deps.served?.offer(ranking, req, vectors);
    return ranking;
  }

  /** The store's answer, or null when it fails or takes longer than the budget (never waits past it). */
  private async readWithin(requests: readonly ReadRequest[]): Promise<ReadResult[] | null> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), this.options.readTimeoutMs);
    });
    const read = this.deps.reader.read(requests).catch((err: Error) => {
      this.deps.log.warn({ err: err.message }, 'online store read failed: ranking with defaults');
      return null;
    });
    try {
      return await Promise.race([read, late]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** What an entity with no stored data reads as: assembling it gives the definitions' defaults. */
function defaultsOf(r: ReadRequest): ReadResult {
  return { values: r.fields.map(() => null), setCounts: r.sets.map(() => 0) };
}

/** Per request, its entity's name when it has no stored data, else null: once per entity, not per candidate. */
function unknownEntities(features: FeatureSet, plan: ReadPlan, results: readonly ReadResult[]): (string | null)[] {
  const out: (string | null)[] = new Array(results.length);
  for (let r = 0; r < results.length; r++) {
    const { values, setCounts } = results[r] as ReadResult;
    let empty = true;
    for (let i = 0; empty && i < values.length; i++) empty = values[i] === null;
    for (let i = 0; empty && i < setCounts.length; i++) empty = setCounts[i] === 0;
    out[r] = empty ? (features.groups[plan.groupOf[r] as number] as CompiledGroup).group.entity.name : null;
  }
  return out;
}
