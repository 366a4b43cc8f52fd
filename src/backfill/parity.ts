// The headline check: for every impression the stream applied, the vector served from the online store at that
// moment (a), the backfill's replay (b) and an independent SQL computation over the raw events (c) agree,
// counts exactly and everything else to 1e-9.
import type { ClickHouseClient } from '@clickhouse/client';
import type { FeatureKind, FeatureSet } from '../features/compile.ts';
import type { FeatureGroup } from '../features/define.ts';
import { opOf } from '../features/ops/index.ts';
import { insertNative } from '../offline/clickhouse.ts';
import { type NativeColumn, native, nativeBlock } from '../offline/native.ts';
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

/**
 * The parity rule, for the batch check and the live one alike: whether feature i's value `a` agrees with the
 * reference `b` (counts exactly, everything else to a relative 1e-9).
 */
export function agreement(features: FeatureSet): (i: number, a: number, b: number) => boolean {
  const exact = features.features.map((f) => exactKind(f.kind));
  return (i, a, b) => same(exact[i] as boolean, a, b);
}

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
  const agrees = agreement(features);
  for (const [id, b] of backfill) {
    const a = served.get(id);
    const c = sql.get(id);
    if (!a) report.missingServed++;
    if (!c) report.missingSql++;
    report.features.forEach((fp, i) => {
      const bad = {
        served: a !== undefined && !agrees(i, a[i] as number, b[i] as number),
        sql: c !== undefined && !agrees(i, c[i] as number, b[i] as number),
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

/** Keeps a report in parity_runs (schema.ts), one row per run, for the console. */
export async function recordParityRun(ch: ClickHouseClient, report: ParityReport, at = Date.now()): Promise<void> {
  const examples = Object.fromEntries(report.features.flatMap((f) => (f.example ? [[f.name, f.example]] : [])));
  const row = { ...report, at, examples: JSON.stringify(examples) };
  const uints = (name: string, get: (f: FeatureParity) => number): NativeColumn<typeof row> =>
    native.array(
      name,
      'UInt64',
      (r) => r.features.length,
      (w, r) => {
        for (const f of r.features) w.i64(get(f));
      },
    );
  const columns: NativeColumn<typeof row>[] = [
    native.time('run_at', (r) => r.at),
    native.u64('impressions', (r) => r.impressions),
    native.u64('missing_served', (r) => r.missingServed),
    native.u64('missing_sql', (r) => r.missingSql),
    native.u64('mismatches', (r) => r.mismatches),
    native.array(
      'features',
      'String',
      (r) => r.features.length,
      (w, r) => {
        for (const f of r.features) w.string(f.name);
      },
    ),
    uints('served_mismatches', (f) => f.servedMismatches),
    uints('sql_mismatches', (f) => f.sqlMismatches),
    native.string('examples', (r) => r.examples),
  ];
  await insertNative(ch, {
    table: 'parity_runs',
    columns: columns.map((c) => c.name),
    block: nativeBlock(columns, [row]),
    settings: { async_insert: 0, insert_distributed_sync: 1 },
  });
}
