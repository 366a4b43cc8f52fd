// The README's five-minute tour works as written: its request asks about entities the tour generated, at a moment
// of their data (not "now", weeks later, when every window is empty), and its files land in the ignored .data/.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_GENERATOR_OPTIONS, generate } from '../../src/events/generator.ts';

const readme = readFileSync(join(import.meta.dirname, '../../README.md'), 'utf8');
const tour = /## A five-minute tour\n+```bash\n([\s\S]*?)\n```/.exec(readme)?.[1] ?? '';

/** The flag values of the tour's commands (flags spelt out by the tour only). */
const flag = (name: string) => [...tour.matchAll(new RegExp(`--${name} (\\S+)`, 'g'))].map((m) => m[1] as string);

describe("the README's tour", () => {
  it('ranks entities the tour generated, at a time within the generated days', { timeout: 60_000 }, () => {
    const days = Number(flag('days')[0]);
    const curl = /-d '([^']*)'/.exec(tour)?.[1] ?? '';
    const request = JSON.parse(curl.replace(/\n\s*/g, '')) as {
      user_id: string;
      publisher_id: string;
      time?: number;
      candidates: { ad_id: string; campaign_id: string; advertiser_id: string; category: string }[];
    };
    const start = DEFAULT_GENERATOR_OPTIONS.start;
    expect(request.time).toBeGreaterThan(start);
    expect(request.time).toBeLessThan(start + days * 86_400_000);

    const impressions = generate({ days, candidatesPerRequest: Number(flag('candidates')[0]) })
      .map((r) => r.record)
      .flatMap((r) => (r.kind === 'impression' ? [r.event] : []));
    const seen = (pred: (i: (typeof impressions)[number]) => boolean) => impressions.some(pred);
    expect(seen((i) => i.user_id === request.user_id)).toBe(true);
    expect(seen((i) => i.publisher_id === request.publisher_id)).toBe(true);
    for (const c of request.candidates) {
      const ad = impressions.find((i) => i.ad_id === c.ad_id);
      expect({ campaign_id: ad?.campaign_id, advertiser_id: ad?.advertiser_id, category: ad?.category }).toEqual({
        campaign_id: c.campaign_id,
        advertiser_id: c.advertiser_id,
        category: c.category,
      });
    }
    // `features read` asks about the same ad's campaign.
    expect(flag('campaign')).toEqual(request.candidates.map((c) => c.campaign_id));
  });

  it('writes its files under .data/ (ignored), not into the clone', () => {
    const files = [...flag('out'), ...flag('training-set')];
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect(f).toMatch(/^\.data\//);
  });
});
