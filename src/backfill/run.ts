// `tributary backfill`: replay -> point-in-time rows with labels -> a training set writer (CSV file by default,
// resumable from checkpoints).
import { existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { FeatureSet } from '../features/compile.ts';
import { Labels } from './labels.ts';
import { inChunks, Replay, type ReplayRecord } from './replay.ts';
import { CsvTrainingWriter, type TrainingColumn, type TrainingMeta, type TrainingWriter } from './training-set.ts';

export interface BackfillOptions {
  features: FeatureSet;
  /** Opens the source; called twice (labels need the whole log before rows can be final). */
  open: () => AsyncIterable<ReplayRecord>;
  sourceName: string;
  out: string;
  attributionMs: number;
  allowedLatenessMs: number;
  /** Emit rows only for impressions in [from, to) (event time); the replay still starts at the beginning. */
  from?: number;
  to?: number;
  /** Feature names to write (default: all). */
  only?: readonly string[];
  onProgress?: (events: number) => void;
  /** Where rows go (default: a CSV at `out`, the one resumable writer). */
  writer?: (columns: TrainingColumn[]) => TrainingWriter;
  /** Events between checkpoints (OUT.checkpoint.json), from which a rerun of the same backfill resumes. */
  checkpointEvery?: number;
  /** Called when an earlier, interrupted run of the same backfill is resumed, with its position. */
  onResume?: (events: number) => void;
  /** How many partitions the source holds, when known (see Replay): bounds the replay's state. */
  partitions?: number;
}

/**
 * Where an interrupted backfill stood: the source position (records consumed), the committed length of
 * OUT.partial and the running totals at that point. Valid only for the same inputs (`run`).
 */
interface Checkpoint {
  run: string;
  events: number;
  bytes: number;
  rows: number;
  positives: number;
  heldBack: number;
  first: number | null;
  last: number | null;
}

function readCheckpoint(path: string, partial: string, run: string): Checkpoint | undefined {
  if (!existsSync(path) || !existsSync(partial)) return undefined;
  const c = JSON.parse(readFileSync(path, 'utf8')) as Checkpoint;
  return c.run === run && statSync(partial).size >= c.bytes ? c : undefined;
}

function writeCheckpoint(path: string, c: Checkpoint): void {
  writeFileSync(`${path}.tmp`, JSON.stringify(c));
  renameSync(`${path}.tmp`, path);
}

export async function runBackfill(o: BackfillOptions): Promise<TrainingMeta> {
  const labels = new Labels(o.attributionMs);
  for await (const r of o.open()) {
    if (r.source === 'click') labels.addClick(r.event);
    else labels.observe(r.event.event_time);
  }

  const names = o.only ?? o.features.names;
  const columns = names.map((name) => {
    const index = o.features.names.indexOf(name);
    if (index < 0) throw new Error(`unknown feature "${name}" (see \`tributary features\`)`);
    return { index, name };
  });
  // The same backfill: same source, definitions and options. The engine state is rebuilt by replaying the
  // records before the checkpoint again (at engine speed) rather than stored: the label pass reads the whole
  // source first anyway, and the state of a long history is larger than the time it takes to recompute.
  const run = JSON.stringify([
    o.sourceName,
    o.features.version,
    names,
    o.attributionMs,
    o.allowedLatenessMs,
    o.from,
    o.to,
  ]);
  const checkpointPath = `${o.out}.checkpoint.json`;
  const resumed = o.writer ? undefined : readCheckpoint(checkpointPath, `${o.out}.partial`, run);
  const writer = o.writer?.(columns) ?? new CsvTrainingWriter(o.out, columns, resumed);
  if (resumed) o.onResume?.(resumed.events);
  const replay = new Replay(o.features, o.allowedLatenessMs, { partitions: o.partitions });
  const skip = resumed?.events ?? 0;
  let events = 0;
  let positives = resumed?.positives ?? 0;
  let heldBack = resumed?.heldBack ?? 0;
  let first: number | null = resumed?.first ?? null;
  let last: number | null = resumed?.last ?? null;
  const from = o.from ?? Number.NEGATIVE_INFINITY;
  const to = o.to ?? Number.POSITIVE_INFINITY;
  const every = o.checkpointEvery ?? 1_000_000;
  const F = o.features.names.length;
  // The replay takes records a chunk at a time; rows and checkpoints still go record by record.
  for await (const chunk of inChunks(o.open())) {
    const { vectors, emitted } = replay.applyChunk(chunk);
    for (let k = 0; k < chunk.length; k++) {
      const r = chunk[k] as ReplayRecord;
      if (writer.commit && events > skip && events % every === 0) {
        // Every record before this one is fully written.
        const { bytes, rows } = await writer.commit();
        writeCheckpoint(checkpointPath, { run, events, bytes, rows, positives, heldBack, first, last });
      }
      if (++events % 10_000 === 0) o.onProgress?.(events);
      if (emitted[k] !== 1 || r.source !== 'impression' || events <= skip) continue;
      const t = r.event.event_time;
      if (t < from || t >= to) continue;
      if (!labels.isFinal(t)) {
        heldBack++;
        continue;
      }
      const label = labels.label(r.event.event_id, t);
      positives += label;
      first = first === null ? t : Math.min(first, t);
      last = last === null ? t : Math.max(last, t);
      await writer.write({ impression: r.event, label, vector: vectors.subarray(k * F, (k + 1) * F) });
    }
  }
  o.onProgress?.(events);
  const meta: TrainingMeta = {
    features: names,
    definitions_version: o.features.version,
    attribution_ms: o.attributionMs,
    allowed_lateness_ms: o.allowedLatenessMs,
    source: o.sourceName,
    rows: writer.rows,
    positives,
    held_back: heldBack,
    first_event_time: first === null ? null : new Date(first).toISOString(),
    last_event_time: last === null ? null : new Date(last).toISOString(),
  };
  await writer.close(meta);
  rmSync(checkpointPath, { force: true });
  return meta;
}
