// Where the console's metrics come from: a process's prom-client registries (the demo's single process) or the
// /metrics of serve, stream and verify processes (--scrape). One reading path for both: Prometheus text, parsed
// into samples the pages' series are computed from.
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import type { Registry } from 'prom-client';
import { publicUrl, withBasicAuth } from '../util/url-credentials.ts';

export interface MetricsSource {
  /** Shown on the pages: a registry's name, or the scraped URL without credentials. */
  readonly name: string;
  text(): Promise<string>;
}

/** One sample: a series' value, its labels and which source answered it. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
  source: string;
}

export interface MetricsReading {
  samples: Sample[];
  /** Sources that did not answer, with why (shown on the pages, not swallowed). */
  problems: { source: string; reason: string }[];
}

export function registrySource(name: string, registry: Registry): MetricsSource {
  return { name, text: () => registry.metrics() };
}

export function scrapeSource(url: string, timeoutMs = 2000): MetricsSource {
  const name = publicUrl(url);
  // A scrape endpoint behind a proxy that wants Basic auth: the URL's credentials go as a header.
  const { target, headers } = withBasicAuth(url);
  return {
    name,
    async text() {
      const res = await fetch(target, { headers, signal: AbortSignal.timeout(timeoutMs) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      return res.text();
    },
  };
}

/**
 * Prometheus text as samples. The parser folds a histogram's or summary's series into one object and loses their
 * labels (it only handles unlabelled ones), so those families are read as untyped: each `_bucket`, `_sum` and
 * `_count` line then arrives as a sample of its own with every label, `le` included.
 */
export function parseMetrics(text: string, source: string): Sample[] {
  const plain = text.replace(/^# TYPE (\S+) (histogram|summary)$/gm, '# TYPE $1 untyped');
  const out: Sample[] = [];
  for (const family of parsePrometheusTextFormat(plain))
    for (const m of family.metrics)
      if (m.value !== undefined)
        out.push({ name: family.name, labels: m.labels ?? {}, value: Number(m.value), source });
  return out;
}

export async function readMetrics(sources: readonly MetricsSource[]): Promise<MetricsReading> {
  const reading: MetricsReading = { samples: [], problems: [] };
  await Promise.all(
    sources.map(async (s) => {
      try {
        reading.samples.push(...parseMetrics(await s.text(), s.name));
      } catch (err) {
        reading.problems.push({ source: s.name, reason: (err as Error).message });
      }
    }),
  );
  return reading;
}

/** The sum of `name`'s samples whose labels include `match`. */
export function total(samples: readonly Sample[], name: string, match: Record<string, string> = {}): number {
  let x = 0;
  for (const s of samples) if (s.name === name && matches(s.labels, match)) x += s.value;
  return x;
}

/** `name`'s samples summed by the value of `label`. */
export function byLabel(samples: readonly Sample[], name: string, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) {
    if (s.name !== name) continue;
    const k = s.labels[label] ?? '';
    out[k] = (out[k] ?? 0) + s.value;
  }
  return out;
}

/** A histogram's cumulative bucket counts (upper bound, count), ascending, summed over sources and `match`. */
export function buckets(
  samples: readonly Sample[],
  name: string,
  match: Record<string, string> = {},
): [number, number][] {
  const at = new Map<number, number>();
  for (const s of samples) {
    if (s.name !== `${name}_bucket` || !matches(s.labels, match)) continue;
    const le = s.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(s.labels.le);
    at.set(le, (at.get(le) ?? 0) + s.value);
  }
  return [...at].sort((a, b) => a[0] - b[0]);
}

function matches(labels: Record<string, string>, match: Record<string, string>): boolean {
  for (const k in match) if (labels[k] !== match[k]) return false;
  return true;
}

/**
 * The q-quantile of a histogram given as cumulative (upper bound, count) pairs, interpolated linearly inside the
 * bucket as Prometheus's histogram_quantile does; NaN with no observations. A quantile in the +Inf bucket is the
 * highest finite bound.
 */
export function histogramQuantile(q: number, cumulative: readonly [number, number][]): number {
  const n = cumulative.at(-1)?.[1] ?? 0;
  if (n <= 0) return Number.NaN;
  const rank = q * n;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [le, count] of cumulative) {
    if (count >= rank) {
      if (le === Number.POSITIVE_INFINITY) return lowerBound;
      if (count === lowerCount) return le;
      return lowerBound + ((le - lowerBound) * (rank - lowerCount)) / (count - lowerCount);
    }
    lowerBound = le;
    lowerCount = count;
  }
  return lowerBound;
}
