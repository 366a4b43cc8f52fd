// Reads the backfill's training set (CSV + <file>.meta.json, see src/backfill/training-set.ts) into columns the
// trainer uses, and splits it by event time: train on the past, evaluate on the later part.
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { parse } from 'csv-parse';
import { ROW_KEYS, type TrainingMeta } from '../backfill/training-set.ts';

export interface TrainingData {
  meta: TrainingMeta;
  /** Feature columns in the file's order (= meta.features). */
  features: readonly string[];
  /** Raw feature values, row-major: x[row * features.length + j]. */
  x: Float64Array;
  y: Uint8Array;
  /** Impression event time, ms since the epoch. */
  time: Float64Array;
}

export class TrainingSetError extends Error {}

export async function readTrainingSet(path: string): Promise<TrainingData> {
  let meta: TrainingMeta;
  try {
    meta = JSON.parse(await readFile(`${path}.meta.json`, 'utf8')) as TrainingMeta;
  } catch (err) {
    throw new TrainingSetError(
      `cannot read ${path}.meta.json (written by \`tributary backfill\`): ${(err as Error).message}`,
    );
  }
  const features = meta.features;
  const f = features.length;
  const expected = [...ROW_KEYS, 'label', ...features];
  const timeCol = ROW_KEYS.indexOf('event_time');
  const labelCol = ROW_KEYS.length;
  const first = labelCol + 1;
  let x = new Float64Array(meta.rows * f);
  let y = new Uint8Array(meta.rows);
  let time = new Float64Array(meta.rows);
  let n = 0;
  let line = 0;
  const fail = (reason: string) => new TrainingSetError(`${path}:${line}: ${reason}`);
  const input = createReadStream(path);
  try {
    for await (const rec of input.pipe(parse({ relax_column_count: true })) as AsyncIterable<string[]>) {
      line++;
      if (line === 1) {
        if (rec.join(',') !== expected.join(','))
          throw fail(
            `header does not match ${path}.meta.json (expected ${expected.length} columns: keys, label, features)`,
          );
        continue;
      }
      if (rec.length !== expected.length) throw fail(`${rec.length} fields, expected ${expected.length}`);
      if (n === y.length) {
        // More rows than the metadata says: grow rather than trust it.
        x = grow(x, Math.max(16, y.length * 2) * f);
        y = grow(y, Math.max(16, y.length * 2));
        time = grow(time, y.length);
      }
      const t = Number(rec[timeCol]);
      if (!Number.isFinite(t)) throw fail(`event_time "${rec[timeCol]}" is not a number`);
      const label = rec[labelCol];
      if (label !== '0' && label !== '1') throw fail(`label "${label}" is not 0 or 1`);
      time[n] = t;
      y[n] = label === '1' ? 1 : 0;
      for (let j = 0; j < f; j++) {
        const v = Number(rec[first + j]);
        if (!Number.isFinite(v)) throw fail(`${features[j]} = "${rec[first + j]}" is not a number`);
        x[n * f + j] = v;
      }
      n++;
    }
  } catch (err) {
    if (err instanceof TrainingSetError) throw err;
    throw fail((err as Error).message);
  } finally {
    input.destroy();
  }
  return { meta, features, x: x.subarray(0, n * f), y: y.subarray(0, n), time: time.subarray(0, n) };
}

function grow<T extends Float64Array | Uint8Array>(a: T, length: number): T {
  const b = new (a.constructor as new (n: number) => T)(length);
  b.set(a);
  return b;
}

export interface Part {
  x: Float64Array;
  y: Uint8Array;
  time: Float64Array;
}

/**
 * Rows ordered by event time; the last `evalFraction` of them (never splitting one timestamp) are the evaluation
 * part, the rest the training part.
 */
export function splitByTime(d: TrainingData, evalFraction: number): { train: Part; evaluation: Part } {
  if (!(evalFraction > 0 && evalFraction < 1))
    throw new RangeError(`evalFraction must be in (0, 1), got ${evalFraction}`);
  const n = d.y.length;
  const f = d.features.length;
  const order = Uint32Array.from(d.y.keys()).sort((a, b) => (d.time[a] as number) - (d.time[b] as number) || a - b);
  let cut = Math.round(n * (1 - evalFraction));
  while (cut > 0 && cut < n && d.time[order[cut] as number] === d.time[order[cut - 1] as number]) cut++;
  if (cut <= 0 || cut >= n)
    throw new TrainingSetError(`${n} rows cannot be split ${1 - evalFraction}/${evalFraction} by time: need more rows`);
  const take = (from: number, to: number): Part => {
    const x = new Float64Array((to - from) * f);
    const y = new Uint8Array(to - from);
    const time = new Float64Array(to - from);
    for (let i = from; i < to; i++) {
      const r = order[i] as number;
      x.set(d.x.subarray(r * f, (r + 1) * f), (i - from) * f);
      y[i - from] = d.y[r] as number;
      time[i - from] = d.time[r] as number;
    }
    return { x, y, time };
  };
  return { train: take(0, cut), evaluation: take(cut, n) };
}
