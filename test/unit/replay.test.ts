// The replay's tile rings against the reference state (MemoryStore read through FeatureSet.plan/assemble): the
// same vector, bit for bit, for every applied impression of generated logs with late, out-of-order and duplicate
// events, in one partition and in several partitions replayed hours apart (rings that wrap, evict and grow).
import { describe, expect, it } from 'vitest';
import { Replay, type ReplayRecord } from '../../src/backfill/replay.ts';
import { generate } from '../../src/events/generator.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { count, distinct, groupBy, lastSeen, ratio, sum } from '../../src/features/define.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { entities } from '../../src/features/entities.ts';
import { window } from '../../src/features/window.ts';
import { ReferenceState } from '../support/reference.ts';

const HOUR = 3600_000;

function records(seed: number, partitions: number, users: number): ReplayRecord[] {
  const log = generate({
    seed,
    days: 2,
    impressionsPerDay: 8000,
    users,
    ads: 60,
    lateShare: 0.05,
    duplicateShare: 0.03,
    jitterMs: 60_000,
  });
  const out: ReplayRecord[] = [];
  for (const { record } of log) {
    if (record.kind !== 'impression' && record.kind !== 'click') continue;
    // By event id: one entity's events sit in every partition, so a partition ahead reads what one behind updates.
    const partition = `p/${record.event.event_id.charCodeAt(record.event.event_id.length - 1) % partitions}`;
    out.push({ source: record.kind, partition, event: record.event } as ReplayRecord);
  }
  if (partitions === 1) return out;
  // As a consumer may apply them: each partition's next 3 hours of log in turn, so partitions drift apart.
  const byPartition = Array.from({ length: partitions }, (_, p) => out.filter((r) => r.partition === `p/${p}`));
  const mixed: ReplayRecord[] = [];
  const t0 = Math.min(...out.map((r) => r.event.event_time));
  for (let slice = 0; mixed.length < out.length; slice++)
    for (const rs of byPartition)
      for (const r of rs) if (Math.floor((r.event.event_time - t0) / (3 * HOUR)) === slice) mixed.push(r);
  return mixed;
}

function expectSameVectors(features: FeatureSet, log: ReplayRecord[], latenessMs: number, partitions: number) {
  const fast = new Replay(features, latenessMs, { partitions });
  const reference = new Replay(features, latenessMs, { state: new ReferenceState(features) });
  let compared = 0;
  for (const r of log) {
    const a = fast.apply(r);
    const b = reference.apply(r);
    expect(a === null, r.event.event_id).toBe(b === null);
    if (a && b) {
      // One assertion per vector keeps the test fast; on a mismatch, name the features that differ.
      if (!a.every((x, i) => Object.is(x, b[i]))) {
        const diff = features.names.filter((_, i) => !Object.is(a[i], b[i]));
        expect({ event: r.event.event_id, diff, a: [...a], b: [...b] }).toBeNull();
      }
      compared++;
    }
  }
  expect(fast.counts).toEqual(reference.counts);
  expect(fast.counts.late).toBeGreaterThan(0);
  expect(fast.counts.duplicate).toBeGreaterThan(0);
  return compared;
}

describe('replay tile rings', () => {
  it('equal the reference store on every impression of one partition (default features)', () => {
    const log = records(11, 1, 400);
    expect(expectSameVectors(new FeatureSet(DEFAULT_GROUPS), log, HOUR, 1)).toBeGreaterThan(14_000);
  }, 60_000);

  it('equal it with partitions replayed hours apart and small windows whose rings wrap and evict', () => {
    const W3m = window('3m', '1m');
    const W20m = window('20m', '5m');
    const W2h = window('2h', '1h');
    const features = new FeatureSet([
      groupBy(entities.user, {
        description: 'small windows',
        aggregations: [
          count('impressions', 'impression', [W3m, W20m, W2h]),
          count('clicks', 'click', [W3m, W20m, W2h]),
          distinct('ads', 'impression', 'ad_id', [W3m, W20m, W2h]),
          distinct('clicked_ads', 'click', 'ad_id', [W3m, W20m]),
          lastSeen('since_click', 'click', [W20m, W2h]),
          sum('spend', 'impression', 'bid', [W20m]),
        ],
        ratios: [ratio('ctr', 'clicks', 'impressions', { rate: 0.02, weight: 10 })],
      }),
      ...DEFAULT_GROUPS.filter((g) => g.entity.name !== 'user'),
    ]);
    const log = records(12, 3, 40);
    expect(expectSameVectors(features, log, 10 * 60_000, 3)).toBeGreaterThan(14_000);
  }, 60_000);

  it('give the same vectors and counts record by record and a chunk at a time', () => {
    const features = new FeatureSet(DEFAULT_GROUPS);
    const F = features.names.length;
    const log = records(13, 3, 200);
    const one = new Replay(features, HOUR, { partitions: 3 });
    const expected = log.map((r) => one.apply(r)?.slice() ?? null);
    for (const size of [1000, 7]) {
      const chunked = new Replay(features, HOUR, { partitions: 3 });
      for (let i = 0; i < log.length; i += size) {
        const { vectors, emitted } = chunked.applyChunk(log.slice(i, i + size));
        for (let k = 0; k < Math.min(size, log.length - i); k++) {
          const want = expected[i + k];
          expect(emitted[k] === 1).toBe(want !== null);
          if (want && !want.every((x, f) => Object.is(x, vectors[k * F + f])))
            expect({ record: i + k, got: [...vectors.subarray(k * F, (k + 1) * F)], want: [...want] }).toBeNull();
        }
      }
      expect(chunked.counts).toEqual(one.counts);
    }
  }, 60_000);
});
