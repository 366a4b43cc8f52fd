// Writes point-in-time training rows: a CSV or Parquet file a data scientist can open, with the feature list and
// the definitions' version recorded beside it (FILE.meta.json). Files appear whole or not at all.

import { once } from 'node:events';
import { createWriteStream, renameSync, rmSync, writeFileSync } from 'node:fs';
import type { AdImpression } from '../events/types.ts';

export const ROW_KEYS = [
  'event_id',
  'event_time',
  'user_id',
  'ad_id',
  'campaign_id',
  'advertiser_id',
  'category',
  'publisher_id',
  'device',
  'os',
] as const;

export interface TrainingRow {
  impression: AdImpression;
  label: 0 | 1;
  vector: Float64Array;
}

/** A feature to write: its index in the full vector and its name. */
export interface TrainingColumn {
  index: number;
  name: string;
}

export interface TrainingMeta {
  features: readonly string[];
  definitions_version: string;
  attribution_ms: number;
  allowed_lateness_ms: number;
  source: string;
  rows: number;
  positives: number;
  held_back: number;
  first_event_time: string | null;
  last_event_time: string | null;
}

export interface TrainingWriter {
  readonly rows: number;
  write(r: TrainingRow): Promise<void>;
  /** Makes the output appear, whole, with its metadata. */
  close(meta: TrainingMeta): Promise<void>;
}

export type TrainingFormat = 'csv' | 'parquet';

/**
 * Converts a finished CSV of training rows (header: ROW_KEYS, label, feature names; event_time in epoch ms) into
 * `to` in another format, creating `to` whole.
 */
export type TrainingConverter = (csv: string, to: string, features: readonly string[]) => Promise<void>;

function csvField(v: string): string {
  return /[",\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v;
}

/** The rows as CSV in a file of its own (a staging file: the writers below decide where it ends up). */
class CsvRows {
  private readonly out;
  rows = 0;

  constructor(
    readonly path: string,
    private readonly columns: readonly TrainingColumn[],
  ) {
    this.out = createWriteStream(path);
    this.out.write(`${[...ROW_KEYS, 'label', ...columns.map((c) => c.name)].join(',')}\n`);
  }

  async write(r: TrainingRow): Promise<void> {
    let line = '';
    for (const k of ROW_KEYS)
      line += `${k === 'event_time' ? r.impression.event_time : csvField(String(r.impression[k]))},`;
    line += r.label;
    for (const c of this.columns) line += `,${r.vector[c.index]}`;
    this.rows++;
    if (!this.out.write(`${line}\n`)) await once(this.out, 'drain');
  }

  async end(): Promise<void> {
    this.out.end();
    await once(this.out, 'finish');
  }
}

function writeMeta(path: string, meta: TrainingMeta): void {
  writeFileSync(`${path}.meta.json`, `${JSON.stringify(meta, null, 2)}\n`);
}

export class CsvTrainingWriter implements TrainingWriter {
  private readonly csv: CsvRows;

  constructor(
    private readonly path: string,
    columns: readonly TrainingColumn[],
  ) {
    this.csv = new CsvRows(`${path}.partial`, columns);
  }

  get rows(): number {
    return this.csv.rows;
  }

  write(r: TrainingRow): Promise<void> {
    return this.csv.write(r);
  }

  async close(meta: TrainingMeta): Promise<void> {
    await this.csv.end();
    writeMeta(this.path, meta);
    renameSync(this.csv.path, this.path);
  }
}

/** Stages the rows as CSV, then converts them (e.g. to Parquet) into `${path}.partial` and renames it into place. */
export class ConvertingTrainingWriter implements TrainingWriter {
  private readonly csv: CsvRows;

  constructor(
    private readonly path: string,
    private readonly columns: readonly TrainingColumn[],
    private readonly convert: TrainingConverter,
  ) {
    this.csv = new CsvRows(`${path}.rows.csv.partial`, columns);
  }

  get rows(): number {
    return this.csv.rows;
  }

  write(r: TrainingRow): Promise<void> {
    return this.csv.write(r);
  }

  async close(meta: TrainingMeta): Promise<void> {
    await this.csv.end();
    try {
      await this.convert(
        this.csv.path,
        `${this.path}.partial`,
        this.columns.map((c) => c.name),
      );
    } finally {
      rmSync(this.csv.path, { force: true });
    }
    writeMeta(this.path, meta);
    renameSync(`${this.path}.partial`, this.path);
  }
}
