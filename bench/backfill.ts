// The backfill benchmark, on one generated log (late, out-of-order and duplicate events included), no servers:
// - engine: the replay (admission + tile rings + a vector per applied impression) over records already decoded in
//   memory; on a prefix of the log, beside the tests' per-event reference state in the same Replay (too slow for all);
// - from the event-log file (NDJSON), from the column file (with key ids) and from the embedded ClickHouse (the
//   stream's raw-event tables, loaded with the log first), each end to end: source decoding + engine; and each
//   source alone;
// - ClickHouse SQL alone computing the same features over the same events (parity-sql.ts), beside the engine.
// Rates are events per wall-clock second on this (shared) machine, and per CPU-second of the process (all its
// threads); peak RSS is the process's over each phase.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sqlFeatures } from '../src/backfill/parity-sql.ts';
import { inChunks, Replay, type ReplayRecord } from '../src/backfill/replay.ts';
import { fromClickHouse, fromEventFile } from '../src/backfill/sources.ts';
import { writeEventFile } from '../src/events/event-file.ts';
import { generate } from '../src/events/generator.ts';
import { FeatureSet } from '../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../src/features/definitions.ts';
import { openClickHouse } from '../src/offline/clickhouse.ts';
import { ensureOfflineSchema } from '../src/offline/schema.ts';
import { type ClickRow, type ImpressionRow, OfflineSink } from '../src/offline/sink.ts';
import { ReferenceState } from '../test/support/reference.ts';
import type { Bench, BenchContext, Measured, Row } from './lib.ts';

const LATENESS_MS = 3600_000;
const features = new FeatureSet(DEFAULT_GROUPS);

type Options = 'events' | 'baseline-events';

/** The replay engine over `records`, a vector per applied impression (summed into a checksum, so it is used). */
export async function replayAll(
  records: AsyncIterable<ReplayRecord> | readonly ReplayRecord[],
  state: 'rings' | 'reference',
) {
  const replay = new Replay(features, LATENESS_MS, {
    state: state === 'reference' ? new ReferenceState(features) : undefined,
    partitions: 1,
  });
  const F = features.names.length;
  let n = 0;
  let checksum = 0; // keeps the vectors observably used
  for await (const chunk of inChunks(records)) {
    const { vectors, emitted } = replay.applyChunk(chunk);
    for (let k = 0; k < chunk.length; k++) if (emitted[k] === 1) checksum += vectors[k * F] as number;
    n += chunk.length;
  }
  return { n, checksum };
}

async function count(records: AsyncIterable<ReplayRecord>): Promise<number> {
  let n = 0;
  for await (const _ of records) n++;
  return n;
}

/** The log as the stream would have recorded it: one partition, offsets in log order, batches of 10k. */
async function loadClickHouse(dir: string, records: readonly ReplayRecord[]) {
  const client = await openClickHouse({ dir });
  await ensureOfflineSchema(client);
  const sink = new OfflineSink(client);
  for (let start = 0, seq = 0; start < records.length; start += 10_000, seq++) {
    const impressions: ImpressionRow[] = [];
    const clicks: ClickRow[] = [];
    records.slice(start, start + 10_000).forEach((r, i) => {
      const coordinates = { partition: 0, offset: start + i, ingest_time: r.event.event_time, batch_seq: seq };
      if (r.source === 'impression')
        impressions.push({ ...r.event, ...coordinates, topic: 'ad_impressions', verdict: 'applied' });
      else clicks.push({ ...r.event, ...coordinates, topic: 'ad_clicks', verdict: 'applied' });
    });
    await sink.writeBatch(`bench-${seq}`, { impressions, clicks, tiles: [] });
  }
  return client;
}

export const backfillBench: Bench<Options> = {
  name: 'backfill',
  description: 'replay engine events/s: in memory, from the event file, from embedded ClickHouse; vs SQL alone',
  options: { events: 200_000, 'baseline-events': 20_000 },
  async run({ options, log, meter }: BenchContext<Options>) {
    const days = 2;
    const generated = generate({ seed: 7, days, impressionsPerDay: Math.round(options.events / days / 1.02) });
    const records: ReplayRecord[] = [];
    for (const { record } of generated)
      if (record.kind === 'impression' || record.kind === 'click')
        records.push({ source: record.kind, partition: 'file/0', event: record.event } as ReplayRecord);
    const n = records.length;
    const dir = mkdtempSync(join(tmpdir(), 'tributary-bench-backfill-'));
    const rows: Row[] = [];
    const phases: Record<string, Measured & { events: number }> = {};
    const phase = async (label: string, events: number, body: () => Promise<unknown>) => {
      const m = await meter(label);
      await body();
      phases[label] = { ...(await m.stop()), events };
      log(`${label}: ${events} events in ${phases[label].seconds.toFixed(2)} s`);
      return events / phases[label].seconds;
    };
    /** Events per CPU-second of the whole process: the one-core figure, less sensitive to a busy machine. */
    const perCpu = (label: string) => {
      const p = phases[label] as Measured & { events: number };
      return p.events / p.cpuSeconds;
    };
    const cpuRow = (metric: string, label: string, baseline: string) =>
      rows.push({ benchmark: 'backfill', metric, value: perCpu(label), baseline: perCpu(baseline) });
    try {
      log(`${n} events (${generated.length} log records); warming up`);
      await replayAll(records.slice(0, 20_000), 'rings');
      const engine = await phase('engine', n, () => replayAll(records, 'rings'));
      const prefix = records.slice(0, Math.min(n, options['baseline-events']));
      const enginePrefix = await phase('engine-prefix', prefix.length, () => replayAll(prefix, 'rings'));
      const memory = await phase('reference-prefix', prefix.length, () => replayAll(prefix, 'reference'));
      rows.push({
        benchmark: 'backfill',
        metric: `engine events/s, first ${prefix.length} events (vs per-event reference)`,
        value: enginePrefix,
        baseline: memory,
      });
      rows.push({ benchmark: 'backfill', metric: `engine events/s, all ${n} events`, value: engine });
      cpuRow('engine events per CPU-s, all (vs per-event reference, prefix)', 'engine', 'reference-prefix');
      /** A source read alone, then feeding the engine: events/s beside the engine's, and per CPU-second. */
      const sourceRows = async (name: string, key: string, open: () => AsyncIterable<ReplayRecord>, cpuNote = '') => {
        const alone = await phase(`${key}-source`, n, () => count(open()));
        const fed = await phase(`${key}+engine`, n, () => replayAll(open(), 'rings'));
        rows.push({
          benchmark: 'backfill',
          metric: `${name} source alone events/s (vs engine)`,
          value: alone,
          baseline: engine,
        });
        rows.push({
          benchmark: 'backfill',
          metric: `${name} -> engine events/s (vs engine)`,
          value: fed,
          baseline: engine,
        });
        cpuRow(`${name} -> engine events per CPU-s${cpuNote} (vs engine)`, `${key}+engine`, 'engine');
      };

      const eventLog = generated.filter((g) => g.record.kind === 'impression' || g.record.kind === 'click');
      const file = join(dir, 'events.ndjson');
      await writeEventFile(file, eventLog);
      await sourceRows('file', 'file', () => fromEventFile(file));
      const columns = join(dir, 'events.cols');
      await writeEventFile(columns, eventLog);
      await sourceRows('column file', 'columns', () => fromEventFile(columns));

      log('loading the embedded ClickHouse');
      const client = await loadClickHouse(join(dir, 'ch'), records);
      try {
        await sourceRows('ClickHouse', 'clickhouse', () => fromClickHouse(client), ', chdb threads too');
        await phase('sql', n, () => sqlFeatures(client, DEFAULT_GROUPS, { allowedLatenessMs: LATENESS_MS }));
        rows.push({
          benchmark: 'backfill',
          metric: 'seconds for the features: ClickHouse SQL (vs ClickHouse -> engine)',
          value: (phases.sql as Measured).seconds,
          baseline: (phases['clickhouse+engine'] as Measured).seconds,
        });
      } finally {
        await client.close();
      }
      for (const [label, m] of Object.entries(phases))
        rows.push({ benchmark: 'backfill', metric: `peak RSS MB: ${label}`, value: m.peakRssMB });
      return { rows, details: { events: n, phases } };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
