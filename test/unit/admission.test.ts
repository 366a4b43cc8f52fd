import { describe, expect, it } from 'vitest';
import { Admission } from '../../src/features/admission.ts';

const MIN = 60_000;

describe('admission: watermark, lateness, duplicates', () => {
  it('applies in-lateness late events, dead-letters older ones, counts duplicates once', () => {
    const a = new Admission(10 * MIN);
    expect(a.admit('a', 100 * MIN)).toBe('applied');
    expect(a.admit('b', 95 * MIN)).toBe('applied'); // 5 min late: within lateness
    expect(a.admit('c', 90 * MIN)).toBe('applied'); // exactly at the watermark: still on time
    expect(a.admit('d', 90 * MIN - 1)).toBe('late');
    expect(a.admit('a', 100 * MIN)).toBe('duplicate');
    expect(a.admit('b', 95 * MIN)).toBe('duplicate');
    expect(a.watermark).toBe(90 * MIN);
  });

  it('a restored snapshot decides exactly like the original', () => {
    const a = new Admission(10 * MIN);
    const events = Array.from(
      { length: 2000 },
      (_, i) => [`e${i % 1500}`, ((i * 37) % 500) * 1000 + i * 3000] as const,
    );
    const half = 1000;
    for (const [id, t] of events.slice(0, half)) a.admit(id, t);
    const b = Admission.restore(JSON.parse(JSON.stringify(a.snapshot())), 10 * MIN);
    for (const [id, t] of events.slice(half)) expect(b.admit(id, t)).toBe(a.admit(id, t));
  });

  it('without change tracking (the backfill) decides exactly the same and keeps nothing to drain', () => {
    const a = new Admission(10 * MIN);
    const b = new Admission(10 * MIN, undefined, false);
    for (let i = 0; i < 3000; i++) {
      const id = `e${i % 1700}`;
      const t = ((i * 37) % 900) * 1000 + i * 4000;
      expect(b.admit(id, t)).toBe(a.admit(id, t));
    }
    expect(b.buckets()).toEqual(a.buckets());
    expect(a.drainChanges().added.size).toBeGreaterThan(0);
    expect(b.drainChanges().added.size).toBe(0);
  });

  it('forgets ids only once the watermark has passed their bucket', () => {
    const a = new Admission(10 * MIN);
    a.admit('x', 0);
    a.admit('y', 60 * MIN);
    expect(a.drainChanges().dropped).toEqual([0]); // pruned on advance, reported to the checkpoint
    expect(a.admit('x', 0)).toBe('late'); // a duplicate this old is late, not silently ignored
  });
});
