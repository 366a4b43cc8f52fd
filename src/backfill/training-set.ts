// Writes point-in-time training rows: a CSV or Parquet file a data scientist can open, with the feature list and
// the definitions' version recorded beside it (FILE.meta.json). Files appear whole or not at all.

import { once } from 'node:events';
import { createWriteStream, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import type { AdImpression } from '../events/types.ts';
import { KEY_FIELDS } from '../features/entities.ts';

export const ROW_KEYS = ['event_id', 'event_time', ...KEY_FIELDS, 'device', 'os'] as const;

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

/** What a resumable writer has durably written: the staging file's length and the rows in it. */
export interface Committed {
  bytes: number;
  rows: number;
}

export interface TrainingWriter {
  readonly rows: number;
  write(r: TrainingRow): Promise<void>;
  /** Resumable writers: writes out every row so far (a backfill checkpoint can then point past them). */
  commit?(): Promise<Committed>;
  /** Makes the output appear, whole, with its metadata. */
  close(meta: TrainingMeta): Promise<void>;
}

export type TrainingFormat = 'csv' | 'parquet';

/**
 * Converts a finished RowBinary file of training rows (ROW_KEYS as String except event_time Int64 epoch ms, label
 * UInt8, one Float64 per feature; no header) into `to` in another format, creating `to` whole.
 */
export type TrainingConverter = (csv: string, to: string, features: readonly string[]) => Promise<void>;

function csvField(v: string): string {
  return /[",\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v;
}

/** The rows as CSV in a file of its own (a staging file: the writers below decide where it ends up). */
class CsvRows {
  private readonly out;
  /** Rows not yet handed to the file stream: written in chunks. */
  private pending = '';
  /** Bytes handed to the file stream, header included. */
  private bytes: number;
  rows = 0;

  constructor(
    readonly path: string,
    private readonly columns: readonly TrainingColumn[],
    /** Continue an interrupted write: keep the first `bytes` (holding `rows` rows) of the file. */
    resume?: Committed,
  ) {
    if (resume) {
      truncateSync(path, resume.bytes);
      this.out = createWriteStream(path, { flags: 'r+', start: resume.bytes });
      this.bytes = resume.bytes;
      this.rows = resume.rows;
    } else {
      this.out = createWriteStream(path);
      const header = `${[...ROW_KEYS, 'label', ...columns.map((c) => c.name)].join(',')}\n`;
      this.out.write(header);
      this.bytes = Buffer.byteLength(header);
    }
  }

  async write(r: TrainingRow): Promise<void> {
    let line = '';
    for (const k of ROW_KEYS)
      line += `${k === 'event_time' ? r.impression.event_time : csvField(String(r.impression[k]))},`;
    line += r.label;
    for (const c of this.columns) line += `,${r.vector[c.index]}`;
    this.rows++;
    this.pending += `${line}\n`;
    if (this.pending.length >= 1 << 20) await this.flush();
  }

  private async flush(): Promise<void> {
    const chunk = this.pending;
    this.pending = '';
    this.bytes += Buffer.byteLength(chunk);
    if (!this.out.write(chunk)) await once(this.out, 'drain');
  }

  /** Hands every row to the file and waits until it is written: the partial file's committed length. */
  async commit(): Promise<{ bytes: number; rows: number }> {
    const chunk = this.pending;
    this.pending = '';
    this.bytes += Buffer.byteLength(chunk);
    await new Promise<void>((resolve, reject) => this.out.write(chunk, (err) => (err ? reject(err) : resolve())));
    return { bytes: this.bytes, rows: this.rows };
  }

  async end(): Promise<void> {
    await this.commit();
    this.out.end();
    await once(this.out, 'finish');
  }
}

/**
 * The rows in ClickHouse's RowBinary layout, the staging file for conversions: doubles are copied as their 8 bytes
 * (no float-to-text-to-float round trip, which costs most of a CSV's time and needs exact parsing on the way back).
 */
class RowBinaryRows {
  private readonly out;
  private buf = Buffer.allocUnsafe(1 << 20);
  private at = 0;
  rows = 0;

  constructor(
    readonly path: string,
    private readonly columns: readonly TrainingColumn[],
  ) {
    this.out = createWriteStream(path);
  }

  private string(v: string): void {
    let n = Buffer.byteLength(v);
    // LEB128 length, then the UTF-8 bytes.
    while (n >= 0x80) {
      this.buf[this.at++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    this.buf[this.at++] = n;
    this.at += this.buf.write(v, this.at);
  }

  async write(r: TrainingRow): Promise<void> {
    let need = 9 + 8 * this.columns.length;
    for (const k of ROW_KEYS) if (k !== 'event_time') need += 5 + 3 * String(r.impression[k]).length;
    if (this.at + need > this.buf.length) {
      await this.flush();
      if (need > this.buf.length) this.buf = Buffer.allocUnsafe(need);
    }
    for (const k of ROW_KEYS) {
      if (k !== 'event_time') {
        this.string(String(r.impression[k]));
        continue;
      }
      const t = r.impression.event_time; // Int64 little-endian, from a safe integer
      this.buf.writeUInt32LE(t % 2 ** 32, this.at);
      this.buf.writeInt32LE(Math.floor(t / 2 ** 32), this.at + 4);
      this.at += 8;
    }
    this.buf[this.at++] = r.label;
    for (const c of this.columns) this.at = this.buf.writeDoubleLE(r.vector[c.index] as number, this.at);
    this.rows++;
  }

  private async flush(): Promise<void> {
    if (this.at === 0) return;
    const chunk = this.buf.subarray(0, this.at);
    this.buf = Buffer.allocUnsafe(this.buf.length);
    this.at = 0;
    if (!this.out.write(chunk)) await once(this.out, 'drain');
  }

  async end(): Promise<void> {
    await this.flush();
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
    resume?: Committed,
  ) {
    this.csv = new CsvRows(`${path}.partial`, columns, resume);
  }

  commit(): Promise<Committed> {
    return this.csv.commit();
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

/** Stages the rows as RowBinary, converts them (e.g. to Parquet) into `${path}.partial`, renames that into place. */
export class ConvertingTrainingWriter implements TrainingWriter {
  private readonly staged: RowBinaryRows;

  constructor(
    private readonly path: string,
    private readonly columns: readonly TrainingColumn[],
    private readonly convert: TrainingConverter,
  ) {
    this.staged = new RowBinaryRows(`${path}.rows.partial`, columns);
  }

  get rows(): number {
    return this.staged.rows;
  }

  write(r: TrainingRow): Promise<void> {
    return this.staged.write(r);
  }

  async close(meta: TrainingMeta): Promise<void> {
    await this.staged.end();
    try {
      await this.convert(
        this.staged.path,
        `${this.path}.partial`,
        this.columns.map((c) => c.name),
      );
    } finally {
      rmSync(this.staged.path, { force: true });
    }
    writeMeta(this.path, meta);
    renameSync(`${this.path}.partial`, this.path);
  }
}
