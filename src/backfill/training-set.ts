// Writes point-in-time training rows: a CSV a data scientist can open, with the feature list and the definitions'
// version recorded beside it, and optionally a ClickHouse table for analysts. Files appear whole or not at all.

import { once } from 'node:events';
import { createWriteStream, renameSync, truncateSync, writeFileSync } from 'node:fs';
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

function csvField(v: string): string {
  return /[",\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v;
}

export class CsvTrainingWriter {
  private readonly out;
  private readonly tmp: string;
  /** Rows not yet handed to the file stream: written in chunks. */
  private pending = '';
  /** Bytes handed to the file stream, header included. */
  private bytes: number;
  rows = 0;

  constructor(
    private readonly path: string,
    /** Indices into the full vector of the features to write, and their names. */
    private readonly columns: { index: number; name: string }[],
    /** Continue an interrupted write: keep the first `bytes` (holding `rows` rows) of the partial file. */
    resume?: { bytes: number; rows: number },
  ) {
    this.tmp = `${path}.partial`;
    if (resume) {
      truncateSync(this.tmp, resume.bytes);
      this.out = createWriteStream(this.tmp, { flags: 'r+', start: resume.bytes });
      this.bytes = resume.bytes;
      this.rows = resume.rows;
    } else {
      this.out = createWriteStream(this.tmp);
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

  async close(meta: TrainingMeta): Promise<void> {
    await this.commit();
    this.out.end();
    await once(this.out, 'finish');
    writeFileSync(`${this.path}.meta.json`, `${JSON.stringify(meta, null, 2)}\n`);
    renameSync(this.tmp, this.path);
  }
}
