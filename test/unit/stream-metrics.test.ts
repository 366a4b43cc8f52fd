// The stream's progress gauges (lag, freshness, last commit) are read at scrape time from a progress source: one read
// serves a whole scrape, reads are spaced out, and a slow or failing source never hangs or empties a scrape.
import { describe, expect, it } from 'vitest';
import { StreamMetrics } from '../../src/streams/metrics.ts';
import type { PartitionProgress } from '../../src/streams/progress.ts';

const values = async (m: StreamMetrics, name: string) =>
  (await m.registry.getMetricsAsJSON()).find((x) => x.name === name)?.values ?? [];

describe('stream progress metrics', () => {
  it('exports lag, freshness and last commit per partition from one read per scrape', async () => {
    const m = new StreamMetrics();
    const now = Date.now();
    let reads = 0;
    let lag = 7;
    m.followProgress(async () => {
      reads++;
      return [
        { topic: 't', partition: 0, end: 10, next: 10 - lag, lag, newestEventTime: now - 60_000, committedAt: now },
        { topic: 't', partition: 1, end: 0, next: 0, lag: 0 }, // nothing committed yet: no freshness, no commit time
      ] satisfies PartitionProgress[];
    });
    await m.registry.metrics();
    expect(reads).toBe(1);
    expect(await values(m, 'tributary_stream_consumer_lag')).toEqual([
      { labels: { topic: 't', partition: 0 }, value: 7 },
      { labels: { topic: 't', partition: 1 }, value: 0 },
    ]);
    const [fresh, ...others] = await values(m, 'tributary_stream_freshness_seconds');
    expect(others).toEqual([]);
    expect(fresh?.labels).toEqual({ topic: 't', partition: 0 });
    expect(fresh?.value).toBeGreaterThanOrEqual(60);
    expect(fresh?.value).toBeLessThan(70);
    expect(await values(m, 'tributary_stream_last_commit_timestamp_seconds')).toEqual([
      { labels: { topic: 't', partition: 0 }, value: now / 1000 },
    ]);
    // A second scrape within the interval reuses the read; after it, reads again.
    lag = 0;
    expect((await values(m, 'tributary_stream_consumer_lag'))[0]?.value).toBe(7);
    await new Promise((r) => setTimeout(r, 1100));
    expect((await values(m, 'tributary_stream_consumer_lag'))[0]?.value).toBe(0);
    expect(reads).toBe(2);
  });

  it('answers a scrape within its bound when the source hangs or fails, with the last values read', async () => {
    const m = new StreamMetrics();
    let hang = false;
    m.followProgress(async () => {
      if (hang) await new Promise(() => {});
      return [{ topic: 't', partition: 0, end: 5, next: 2, lag: 3 }];
    });
    expect((await values(m, 'tributary_stream_consumer_lag'))[0]?.value).toBe(3);
    await new Promise((r) => setTimeout(r, 1100));
    hang = true;
    const t0 = performance.now();
    expect((await values(m, 'tributary_stream_consumer_lag'))[0]?.value).toBe(3);
    expect(performance.now() - t0).toBeLessThan(3000);
    // A source that fails from the start: no values, and no error out of the scrape.
    const m2 = new StreamMetrics();
    m2.followProgress(async () => {
      throw new Error('valkey down');
    });
    expect(await values(m2, 'tributary_stream_consumer_lag')).toEqual([]);
  });
});
