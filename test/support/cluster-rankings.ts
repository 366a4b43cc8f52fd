// Rankings as the cluster tests make them: a request over impressions of the log, rankings kept going beside a
// disturbance (each must answer, on features or flagged defaults), and serve's rankings against the same model
// over the replay's state.
import pino from 'pino';
import { expect } from 'vitest';
import type { AdImpression, AdRequest } from '../../src/events/types.ts';
import type { FeatureSet } from '../../src/features/compile.ts';
import type { FeatureReader } from '../../src/online/contract.ts';
import { ScoringMetrics } from '../../src/scoring/metrics.ts';
import type { ModelRuntime } from '../../src/scoring/model-runtime.ts';
import { Ranker } from '../../src/scoring/ranker.ts';

/** A ranking for the user and page of impression k, over 20 ads of the log, at `time`. */
export function rankingRequest(contexts: AdImpression[], k: number, time: number): AdRequest {
  const at = contexts[(k * 613) % contexts.length] as AdImpression;
  const ads = Array.from({ length: 20 }, (_, j) => contexts[(k * 97 + j * 31) % contexts.length] as AdImpression);
  return {
    request_id: `r-${k}`,
    event_time: time,
    user_id: at.user_id,
    publisher_id: at.publisher_id,
    category: null,
    device: at.device,
    os: at.os,
    candidates: ads.map((a) => ({
      ad_id: a.ad_id,
      campaign_id: a.campaign_id,
      advertiser_id: a.advertiser_id,
      category: a.category,
      bid: a.bid,
    })),
  };
}

/** Rankings one after another until `stop()`, which answers how many had features, defaults, or failed. */
export function rankAlong(ranker: Ranker, contexts: AdImpression[], time: number) {
  let going = true;
  const ranked = { ok: 0, defaulted: 0, failed: [] as string[] };
  const loop = (async () => {
    for (let k = 0; going; k++) {
      try {
        const got = await ranker.rank(rankingRequest(contexts, k, time));
        if (got.features_defaulted) ranked.defaulted++;
        else ranked.ok++;
      } catch (err) {
        ranked.failed.push((err as Error).message);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  return {
    stop: async () => {
      going = false;
      await loop;
      return ranked;
    },
  };
}

/** Five rankings by `ranker` equal the same model's over the replay's state, none on defaults. */
export async function expectRanksAsReplay(
  ranker: Ranker,
  models: ModelRuntime,
  features: FeatureSet,
  replay: FeatureReader,
  contexts: AdImpression[],
  time: number,
): Promise<void> {
  const reference = new Ranker(
    { features, reader: replay, models, metrics: new ScoringMetrics(), log: pino({ level: 'silent' }) },
    { readTimeoutMs: 5000 },
  );
  const scores = (r: Awaited<ReturnType<Ranker['rank']>>) => r.ranked.map((c) => [c.ad_id, c.pctr, c.unknown]);
  for (let k = 0; k < 5; k++) {
    const req = rankingRequest(contexts, k, time);
    const got = await ranker.rank(req);
    expect(got.features_defaulted).toBe(false);
    expect(scores(got)).toEqual(scores(await reference.rank(req)));
  }
}
