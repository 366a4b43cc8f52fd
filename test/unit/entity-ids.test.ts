// Ids that become entity keys may not hold the key separator: "u-1|x" × "y" and "u-1" × "x|y" would be one
// user×category entity. Refused with a reason at every entry: events (their dead-letter reason), Kafka ad requests
// and `features read` (a usage error); POST /v1/rank: test/unit/rank-server.test.ts.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import type { AdClick, AdImpression, AdRequest } from '../../src/events/types.ts';
import { MAX_BID, validateEvent } from '../../src/events/validate.ts';
import { entities, entityKey } from '../../src/features/entities.ts';

const now = Date.UTC(2026, 10, 1);
const impression: AdImpression = {
  event_id: 'e-1',
  event_time: now - 60_000,
  user_id: 'u-1',
  ad_id: 'ad-1',
  campaign_id: 'cmp-1',
  advertiser_id: 'adv-1',
  category: 'cat-1',
  publisher_id: 'pub-1',
  device: 'd',
  os: 'o',
  position: 1,
  bid: 1,
} as AdImpression;
const click = { ...impression, impression_id: 'e-0', impression_time: now - 120_000 } as unknown as AdClick;
const request: AdRequest = {
  request_id: 'r-1',
  event_time: now,
  user_id: 'u-1',
  publisher_id: 'pub-1',
  category: null,
  device: 'd',
  os: 'o',
  candidates: [{ ad_id: 'ad-1', campaign_id: 'cmp-1', advertiser_id: 'adv-1', category: 'cat-1', bid: 1 }],
};

describe('entity ids', () => {
  it('would collide without the refusal', () => {
    const a = entityKey(entities.userCategory, { ...impression, user_id: 'u-1|x', category: 'y' });
    const b = entityKey(entities.userCategory, { ...impression, user_id: 'u-1', category: 'x|y' });
    expect(a).toBe(b);
  });

  it('refuses the separator in every key field of impressions, clicks and requests, naming the field', () => {
    for (const field of ['user_id', 'ad_id', 'campaign_id', 'advertiser_id', 'category', 'publisher_id'] as const) {
      const reason = new RegExp(`^${field} contains "\\|", which joins the fields of entity keys$`);
      expect(validateEvent('impression', { ...impression, [field]: 'x|y' }, now)).toMatch(reason);
      expect(validateEvent('click', { ...click, [field]: 'x|y' }, now)).toMatch(reason);
    }
    expect(validateEvent('request', { ...request, user_id: 'u-1|x' }, now)).toMatch(/^user_id contains "\|"/);
    const candidate = { ...(request.candidates[0] as AdRequest['candidates'][number]), category: 'x|y' };
    expect(validateEvent('request', { ...request, candidates: [candidate] }, now)).toMatch(
      /^candidates\[0\]: category contains "\|"/,
    );
    // Not keys: the separator is fine there.
    expect(validateEvent('impression', { ...impression, event_id: 'e|1', device: 'a|b' }, now)).toBeNull();
    expect(validateEvent('request', { ...request, request_id: 'r|1' }, now)).toBeNull();
  });

  it('counts id lengths in characters and caps bids as the API does', () => {
    expect(validateEvent('impression', { ...impression, user_id: '😀'.repeat(256) }, now)).toBeNull();
    expect(validateEvent('impression', { ...impression, user_id: '😀'.repeat(257) }, now)).toMatch(/user_id/);
    expect(validateEvent('impression', { ...impression, bid: MAX_BID }, now)).toBeNull();
    expect(validateEvent('impression', { ...impression, bid: 1e308 }, now)).toMatch(/bid must be a number in/);
    const rich = { ...(request.candidates[0] as AdRequest['candidates'][number]), bid: 2e307 };
    expect(validateEvent('request', { ...request, candidates: [rich] }, now)).toMatch(/^candidates\[0\]: bid/);
  });

  it('`features read` refuses such an id as a usage mistake (exit 2) before reaching Valkey', () => {
    // biome-ignore format: one argument per flag reads best
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'features', 'read',
      '--valkey', 'redis://127.0.0.1:1', '--user', 'u-1|x', '--ad', 'ad-1', '--category', 'y'], { encoding: 'utf8' });
    expect(run.stderr).toMatch(/--user "u-1\|x" contains "\|", which joins entity key fields/);
    expect(run.status).toBe(2);
  });
});
