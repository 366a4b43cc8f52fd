// The compiled feature set + in-process store against a brute-force reading of the definitions, written
// independently here: for each read time, filter raw events by the window rule and aggregate.
import { describe, expect, it } from 'vitest';
import { generate } from '../../src/events/generator.ts';
import type { AdClick, AdImpression } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { entityKey } from '../../src/features/entities.ts';
import { MemoryStore } from '../../src/online/memory-store.ts';
import { getOrCreate } from '../../src/util/map.ts';
import { ReferenceStore } from '../support/reference.ts';

const fs = new FeatureSet(DEFAULT_GROUPS);

describe('feature set', () => {
  it('names every feature once and versions the definitions', () => {
    expect(new Set(fs.names).size).toBe(fs.names.length);
    expect(fs.names).toContain('ad__ctr_1h');
    expect(fs.names).toContain('user_category__clicks_7d');
    expect(fs.version).toMatch(/^[0-9a-f]{12}$/);
    expect(new FeatureSet(DEFAULT_GROUPS).version).toBe(fs.version);
  });

  it('an unknown entity gets the defaults (0 counts, the prior CTR, window-long since-last)', async () => {
    const store = new MemoryStore(fs);
    const ctx = {
      user_id: 'nobody',
      ad_id: 'x',
      campaign_id: 'x',
      advertiser_id: 'x',
      category: 'x',
      publisher_id: 'x',
    };
    const plan = fs.plan([ctx], Date.UTC(2026, 0, 1));
    const [v] = fs.assemble(plan, await store.read(plan.requests));
    expect([...v!]).toEqual(fs.features.map((f) => f.default));
  });

  it('assembles a shared result (a read cache row) as an unshared one, at every read time', () => {
    const ctx = { user_id: 'u', ad_id: 'a', campaign_id: 'c', advertiser_id: 'v', category: 'k', publisher_id: 'p' };
    const answers = (t: number, shared: boolean) => {
      const plan = fs.plan([ctx], t);
      // Values a read could give: a last-seen time of t - 90 s, else a count of 3.
      const result = (r: (typeof plan.requests)[number], i: number) => {
        const g = fs.groups[plan.groupOf[i]!]!;
        const lastSeen = g.series.filter((x) => x.agg.op === 'last_seen').map((x) => `${x.id}.`);
        return {
          values: r.fields.map((f) => (lastSeen.some((p) => f.startsWith(p)) ? t - 90_000 : 3)),
          setCounts: r.sets.map(() => 2),
          shared,
        };
      };
      return { plan, results: plan.requests.map(result) };
    };
    const t = Date.UTC(2026, 0, 1, 12);
    const a = answers(t, true);
    const later = { ...a, plan: fs.plan([ctx], t + 30_000) };
    for (const { plan, results } of [a, later]) {
      const unshared = results.map((r) => ({ ...r, shared: false }));
      expect(fs.assemble(plan, results)).toEqual(fs.assemble(plan, unshared));
    }
    // The same shared result read later: its since-last-click is 30 s longer (kept features depend on the time).
    const since = fs.names.indexOf('user__since_last_click_24h');
    expect(fs.assemble(later.plan, later.results)[0]![since]).toBe(fs.assemble(a.plan, a.results)[0]![since]! + 30);
    // Kept features outlive their room: many more shared results than it holds, each assembled as unshared.
    const unsharedA = fs.assemble(
      a.plan,
      a.results.map((r) => ({ ...r, shared: false })),
    );
    for (let i = 0; i < 3000; i++) {
      const fresh = answers(t + (i % 7) * 1000, true);
      const expected = fs.assemble(
        fresh.plan,
        fresh.results.map((r) => ({ ...r, shared: false })),
      );
      expect(fs.assemble(fresh.plan, fresh.results)).toEqual(expected);
      if (i % 100 === 0) expect(fs.assemble(a.plan, a.results)).toEqual(unsharedA);
    }
  });

  it('matches a brute-force evaluation of the definitions on generated traffic', { timeout: 30_000 }, async () => {
    const fs = new FeatureSet(DEFAULT_GROUPS);
    const log = generate({
      seed: 5,
      days: 2,
      impressionsPerDay: 4000,
      users: 300,
      ads: 60,
      lateShare: 0,
      duplicateShare: 0,
    });
    const events = log.map((r) => r.record).filter((r) => r.kind === 'impression' || r.kind === 'click') as {
      kind: 'impression' | 'click';
      event: AdImpression | AdClick;
    }[];
    const store = new ReferenceStore(fs);
    for (const { kind, event } of events) store.apply(kind, event);
    // The same events in batches, each written merged per stored field (as the stream writes Valkey).
    const batched = new MemoryStore(fs);
    for (let i = 0; i < events.length; i += 700)
      for (const source of ['impression', 'click'] as const) {
        const batch = events.slice(i, i + 700).filter((e) => e.kind === source);
        await batched.applyBatch({ source, events: batch.map((e) => e.event) }, `p/${source}`, i);
      }

    const byEntity = new Map<string, typeof events>();
    for (const r of events) {
      for (const g of DEFAULT_GROUPS) {
        const k = entityKey(g.entity, r.event);
        getOrCreate(byEntity, k, () => [] as typeof events).push(r);
      }
    }
    const probes = events
      .filter((r) => r.kind === 'impression')
      .filter((_, i) => i % 97 === 0)
      .map((r) => r.event as AdImpression);
    const plan = fs.plan(probes, 0);
    expect(plan.requests.length).toBeGreaterThan(0);
    for (const imp of probes) {
      const t = imp.event_time + 123_456; // any read time
      const p = fs.plan([imp], t);
      const [v] = fs.assemble(p, store.readSync(p.requests));
      expect(fs.assemble(p, batched.readSync(p.requests))[0]).toEqual(v);
      fs.features.forEach((f, i) => {
        const [entity, rest] = f.name.split('__') as [string, string];
        const group = DEFAULT_GROUPS.find((g) => g.entity.name === entity)!;
        const aggName = rest.slice(0, rest.lastIndexOf('_'));
        const want = (name: string) => {
          const agg = group.aggregations.find((a) => a.name === name)!;
          const w = agg.windows.find((x) => x.name === f.window)!;
          const end = Math.floor(t / w.tileMs) * w.tileMs;
          const start = end - w.lengthMs;
          const hits = (byEntity.get(entityKey(group.entity, imp)) ?? []).filter(
            (r) => r.kind === agg.source && r.event.event_time >= start && r.event.event_time < end,
          );
          if (agg.op === 'count') return hits.length;
          if (agg.op === 'sum')
            return (
              hits.reduce((s, r) => s + Math.round(((r.event as AdImpression)[agg.column] ?? 0) * agg.scale), 0) /
              agg.scale
            );
          if (agg.op === 'distinct') return new Set(hits.map((r) => r.event[agg.column])).size;
          const latest = Math.max(...hits.map((r) => r.event.event_time));
          return hits.length ? (t - latest) / 1000 : w.lengthMs / 1000;
        };
        let expected: number;
        if (f.kind === 'ratio') {
          const r = group.ratios.find((x) => x.name === aggName)!;
          expected = (want(r.numerator) + r.prior.rate * r.prior.weight) / (want(r.denominator) + r.prior.weight);
          expect(v![i], f.name).toBeCloseTo(expected, 12);
        } else {
          expect(v![i], f.name).toBe(want(aggName));
        }
      });
    }
  });
});
