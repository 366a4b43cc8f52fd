// The headline check: for every impression the stream applied, the vector served from the online store at that
// moment (a), the backfill's replay (b) and an independent SQL computation over the raw events (c) agree,
// counts exactly and everything else to 1e-9.
import type { ClickHouseClient } from '@clickhouse/client';
import type { FeatureKind, FeatureSet } from '../features/compile.ts';
import type { FeatureGroup } from '../features/define.ts';
import { opOf } from '../features/ops/index.ts';
import { sqlFeatures } from './parity-sql.ts';
import { inChunks, Replay } from './replay.ts';
import { fromClickHouse, partitionsIn } from './sources.ts';

export interface FeatureParity {
  name: string;
  servedMismatches: number;
  sqlMismatches: number;
  example?: { event_id: string; served?: number; backfill: number; sql?: number };
}

export interface ParityReport {
  impressions: number;
  missingServed: number;
  missingSql: number;
  features: FeatureParity[];
  mismatches: number;
}

function same(exact: boolean, a: number, b: number): boolean {
  return exact ? a === b : Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
}

/** Whether a feature of this kind is compared exactly (its op's integers), not to a relative 1e-9. */
const exactKind = (kind: FeatureKind) => kind !== 'ratio' && opOf(kind).exact;

async function servedVectors(ch: ClickHouseClient): Promise<Map<string, Float64Array>> {
  const rs = await ch.query({ query: 'SELECT event_id, vector FROM served_vectors FINAL', format: 'JSONEachRow' });
  const out = new Map<string, Float64Array>();
  for (const r of await rs.json<{ event_id: string; vector: number[] }>())
    out.set(r.event_id, Float64Array.from(r.vector));
  return out;
}

export async function checkParity(
  ch: ClickHouseClient,
  features: FeatureSet,
  groups: readonly FeatureGroup[],
  allowedLatenessMs: number,
): Promise<ParityReport> {
  const replay = new Replay(features, allowedLatenessMs, { partitions: await partitionsIn(ch) });
  const backfill = new Map<string, Float64Array>();
  const F = features.names.length;
  for await (const chunk of inChunks(fromClickHouse(ch))) {
    const { vectors, emitted } = replay.applyChunk(chunk);
    chunk.forEach((r, k) => {
      if (emitted[k] === 1) backfill.set(r.event.event_id, vectors.slice(k * F, (k + 1) * F));
    });
  }
  const served = await servedVectors(ch);
  const sql = await sqlFeatures(ch, groups, { allowedLatenessMs });
  const report: ParityReport = {
    impressions: backfill.size,
    missingServed: 0,
    missingSql: 0,
    features: features.features.map((f) => ({ name: f.name, servedMismatches: 0, sqlMismatches: 0 })),
    mismatches: 0,
  };
  const exact = features.features.map((f) => exactKind(f.kind));
  for (const [id, b] of backfill) {
    const a = served.get(id);
    const c = sql.get(id);
    if (!a) report.missingServed++;
    if (!c) report.missingSql++;
    exact.forEach((isExact, i) => {
      const fp = report.features[i] as FeatureParity;
      const bad = {
        served: a !== undefined && !same(isExact, a[i] as number, b[i] as number),
        sql: c !== undefined && !same(isExact, c[i] as number, b[i] as number),
      };
      if (bad.served) fp.servedMismatches++;
      if (bad.sql) fp.sqlMismatches++;
      if ((bad.served || bad.sql) && !fp.example)
        fp.example = { event_id: id, served: a?.[i], backfill: b[i] as number, sql: c?.[i] };
    });
  }
  report.mismatches =
    report.missingServed +
    report.missingSql +
    report.features.reduce((s, f) => s + f.servedMismatches + f.sqlMismatches, 0);
  return report;
}
