// The console's metrics reading: prom-client's text with labelled histograms (which the parser alone folds into one
// unlabelled object) comes back as samples with every label, and quantiles interpolate as Prometheus's do.
import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { buckets, byLabel, histogramQuantile, parseMetrics, total } from '../../src/console/metrics-source.ts';
import { publicUrl } from '../../src/util/url-credentials.ts';

describe('console metrics', () => {
  it('keeps the labels of histogram series and counters', async () => {
    const registry = new Registry();
    const h = new Histogram({
      name: 'x_seconds',
      help: 'h',
      labelNames: ['code'],
      buckets: [0.1, 1],
      registers: [registry],
    });
    const c = new Counter({ name: 'y_total', help: 'c', labelNames: ['reason'], registers: [registry] });
    h.observe({ code: '2xx' }, 0.05);
    h.observe({ code: '2xx' }, 0.5);
    h.observe({ code: '5xx' }, 3);
    c.inc({ reason: 'late' }, 3);
    c.inc({ reason: 'invalid' });
    const samples = parseMetrics(await registry.metrics(), 'serve');
    expect(total(samples, 'x_seconds_count')).toBe(3);
    expect(total(samples, 'x_seconds_count', { code: '5xx' })).toBe(1);
    expect(buckets(samples, 'x_seconds', { code: '2xx' })).toEqual([
      [0.1, 1],
      [1, 2],
      [Number.POSITIVE_INFINITY, 2],
    ]);
    expect(buckets(samples, 'x_seconds')).toEqual([
      [0.1, 1],
      [1, 2],
      [Number.POSITIVE_INFINITY, 3],
    ]);
    expect(byLabel(samples, 'y_total', 'reason')).toEqual({ late: 3, invalid: 1 });
    expect(samples.every((s) => s.source === 'serve')).toBe(true);
  });

  it('interpolates quantiles inside buckets, as histogram_quantile does', () => {
    const h: [number, number][] = [
      [0.1, 50],
      [1, 90],
      [Number.POSITIVE_INFINITY, 100],
    ];
    expect(histogramQuantile(0.5, h)).toBeCloseTo(0.1, 12);
    expect(histogramQuantile(0.7, h)).toBeCloseTo(0.1 + 0.9 * (20 / 40), 12);
    expect(histogramQuantile(0.25, h)).toBeCloseTo(0.05, 12);
    expect(histogramQuantile(0.99, h)).toBe(1); // in +Inf: the highest finite bound
    expect(histogramQuantile(0.5, [[1, 0]])).toBeNaN();
  });

  it('shows scrape URLs without credentials', () => {
    expect(publicUrl('http://user:secret@host:9464/metrics')).toBe('http://host:9464/metrics');
  });
});
