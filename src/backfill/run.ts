// `tributary backfill`: replay -> point-in-time rows with labels -> training set files.
import type { FeatureSet } from '../features/compile.ts';
import { Labels } from './labels.ts';
import { Replay, type ReplayRecord } from './replay.ts';
import { CsvTrainingWriter, type TrainingMeta } from './training-set.ts';

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
  const writer = new CsvTrainingWriter(o.out, columns);
  const replay = new Replay(o.features, o.allowedLatenessMs);
  let events = 0;
  let positives = 0;
  let heldBack = 0;
  let first: number | null = null;
  let last: number | null = null;
  const from = o.from ?? Number.NEGATIVE_INFINITY;
  const to = o.to ?? Number.POSITIVE_INFINITY;
  for await (const r of o.open()) {
    const vector = replay.apply(r);
    if (++events % 10_000 === 0) o.onProgress?.(events);
    if (!vector || r.source !== 'impression') continue;
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
    await writer.write({ impression: r.event, label, vector });
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
  return meta;
}
