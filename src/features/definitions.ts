// The default feature set: what a CTR model for sponsored ads uses. Edit here; every path follows.
import { count, distinct, groupBy, lastSeen, ratio, sum } from './define.ts';
import { entities } from './entities.ts';
import { window } from './window.ts';

const W5m = window('5m', '1m');
const W1h = window('1h', '5m');
const W24h = window('24h', '1h');
const W7d = window('7d', '1d');

/** Prior CTR used to smooth rates of entities with little traffic. */
const CTR_PRIOR = { rate: 0.02, weight: 100 };

const traffic = (windows: ReturnType<typeof window>[]) => ({
  aggregations: [count('impressions', 'impression', windows), count('clicks', 'click', windows)],
  ratios: [ratio('ctr', 'clicks', 'impressions', CTR_PRIOR)],
});

export const DEFAULT_GROUPS = [
  groupBy(entities.ad, { description: 'How an ad performs right now and lately', ...traffic([W5m, W1h, W24h, W7d]) }),
  groupBy(entities.campaign, {
    description: 'Campaign-level performance and spend',
    aggregations: [...traffic([W1h, W24h, W7d]).aggregations, sum('spend', 'impression', 'bid', [W24h])],
    ratios: traffic([]).ratios,
  }),
  groupBy(entities.advertiser, { description: 'Advertiser-level performance', ...traffic([W24h, W7d]) }),
  groupBy(entities.user, {
    description: 'How much this user sees and clicks, and how varied their exposure is',
    aggregations: [
      ...traffic([W1h, W24h, W7d]).aggregations,
      distinct('distinct_ads', 'impression', 'ad_id', [W1h, W24h]),
      lastSeen('since_last_click', 'click', [W24h]),
    ],
    ratios: traffic([]).ratios,
  }),
  groupBy(entities.userCategory, {
    description: "The user's affinity for the ad's category",
    ...traffic([W24h, W7d]),
  }),
  groupBy(entities.publisher, { description: 'Placement quality of the site or app', ...traffic([W1h, W24h]) }),
  groupBy(entities.adPublisher, { description: 'How this ad does on this placement', ...traffic([W24h, W7d]) }),
];
