import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generate } from '../../src/events/generator.ts';

const small = { days: 2, impressionsPerDay: 20_000, candidatesPerRequest: 3 };
const digest = (seed: number) =>
  createHash('sha256')
    .update(JSON.stringify(generate({ ...small, seed })))
    .digest('hex');

describe('generator', () => {
  it('is deterministic: same seed, same events; another seed, other events', { timeout: 30_000 }, () => {
    expect(digest(7)).toBe(digest(7));
    expect(digest(7)).not.toBe(digest(8));
  });

  const log = generate({ ...small, seed: 3, lateShare: 0.05, duplicateShare: 0.02 });
  const byKind = (k: string) => log.filter((r) => r.record.kind === k);

  it('emits a log in ingestion order with late, out-of-order and duplicate deliveries', () => {
    for (let i = 1; i < log.length; i++) expect(log[i]!.ingestTime).toBeGreaterThanOrEqual(log[i - 1]!.ingestTime);
    const late = log.filter((r) => r.ingestTime - r.record.event.event_time >= 60_000).length / log.length;
    expect(late).toBeGreaterThan(0.04);
    expect(late).toBeLessThan(0.08);
    let outOfOrder = 0;
    for (let i = 1; i < log.length; i++)
      if (log[i]!.record.event.event_time < log[i - 1]!.record.event.event_time) outOfOrder++;
    expect(outOfOrder).toBeGreaterThan(log.length * 0.1);
    const imps = byKind('impression');
    const ids = new Set(imps.map((r) => (r.record.event as { event_id: string }).event_id));
    expect(imps.length - ids.size).toBeGreaterThan(imps.length * 0.01);
    expect(ids.size).toBe(small.days * small.impressionsPerDay);
  });

  it('has realistic shape: skewed popularity, daily seasonality, a learnable click rate, consistent keys', () => {
    const imps = byKind('impression').map((r) => r.record.event as { ad_id: string; event_time: number });
    const perAd = new Map<string, number>();
    for (const e of imps) perAd.set(e.ad_id, (perAd.get(e.ad_id) ?? 0) + 1);
    const top = Math.max(...perAd.values());
    expect(top / imps.length).toBeGreaterThan(0.03); // Zipf head
    const byHour = new Array(24).fill(0);
    for (const e of imps) byHour[new Date(e.event_time).getUTCHours()]++;
    expect(Math.max(...byHour) / Math.min(...byHour)).toBeGreaterThan(3);
    const clicks = byKind('click').map(
      (r) => r.record.event as { impression_id: string; event_time: number; impression_time: number },
    );
    const ctr = new Set(clicks.map((c) => c.impression_id)).size / new Set(imps.map((e) => JSON.stringify(e))).size;
    expect(ctr).toBeGreaterThan(0.01);
    expect(ctr).toBeLessThan(0.1);
    for (const c of clicks) expect(c.event_time).toBeGreaterThan(c.impression_time);
    const req = byKind('request')[0]!.record.event as { candidates: unknown[] };
    expect(req.candidates).toHaveLength(3);
  });
});
