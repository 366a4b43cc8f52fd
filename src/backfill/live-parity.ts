// The live parity check (a shadow of `tributary parity`): follows the stream's history in the offline store as it
// grows, in the order the stream applied it (batch_seq, offset), through the backfill's engine (Replay), and compares
// a sample of the impressions' served vectors with the vectors recomputed there, by parity.ts's rule.
//
// How far it reads: only through the stream's settled batch number (CheckpointStore.settledThrough): every batch
// numbered up to it has committed, so its event rows and its served rows (written in separate inserts, served ones
// first) are all in the store, and no batch numbered lower can still appear. Batches of several stream processes
// commit out of number order; reading past a batch in flight would replay later events before it and get every
// vector after it wrong. The pending marks say exactly which batches are in flight (no guessed hold-back time).
//
// Restart: the engine's state is rebuilt from the history's start; impressions are compared only after the last
// flushed position (parity_live.last_batch_seq), so nothing is counted twice. A flush writes the mismatch rows, then
// the parity_live row that moves the position: a crash between them re-checks that range, and its mismatch rows
// collapse onto the first ones (parity_mismatches is keyed by coordinates and feature).
import type { ClickHouseClient } from '@clickhouse/client';
import type { Logger } from 'pino';
import type { FeatureSet } from '../features/compile.ts';
import { insertNative } from '../offline/clickhouse.ts';
import { type NativeColumn, native, nativeBlock } from '../offline/native.ts';
import { crc32 } from '../util/crc32.ts';
import { agreement } from './parity.ts';
import type { ParityMetrics } from './parity-metrics.ts';
import { inChunks, Replay } from './replay.ts';
import { type BatchRange, batchFilter, fromClickHouse } from './sources.ts';

export interface LiveParityOptions {
  features: FeatureSet;
  /** The stream's lateness rule. */
  allowedLatenessMs: number;
  /** Share of impressions compared, 0 < sample ≤ 1, chosen by event id (the same ones in every run). */
  sample: number;
  /**
   * Partitions of the source topics: the replay drops old state once it has seen each (Replay's `partitions`);
   * unset, it never drops any.
   */
  partitions?: number;
  /** The highest batch number through which the stream's batches have all committed (settledThrough). */
  settled: () => Promise<number>;
  metrics: ParityMetrics;
  log: Logger;
}

/** A served feature value that differs from the recomputed one (a parity_mismatches row). */
export interface LiveMismatch {
  at: number;
  event_id: string;
  topic: string;
  partition: number;
  offset: number;
  event_time: number;
  feature: string;
  served: number;
  recomputed: number;
}

/** What the check counted since the last flush, or in all (totals). */
export interface LiveCounts {
  checked: number;
  missing: number;
  /** Per feature, in definitions order. */
  mismatches: number[];
}

/** The event-id threshold of a sample share: an impression is checked iff crc32(event_id) < it. */
export function sampleThreshold(sample: number): number {
  if (!(sample > 0 && sample <= 1)) throw new RangeError(`the sample must be in (0, 1], got ${sample}`);
  return Math.round(sample * 2 ** 32);
}

/** Where a check resumes: the last flushed position (0: the history's start). */
export async function lastCheckedBatch(ch: ClickHouseClient): Promise<number> {
  const rs = await ch.query({
    query: 'SELECT max(last_batch_seq) AS n FROM parity_live',
    format: 'JSONEachRow',
    clickhouse_settings: { output_format_json_quote_64bit_integers: 0 },
  });
  return (await rs.json<{ n: number }>())[0]?.n ?? 0;
}

type ServedRow = [number, number, number[]];

/** served_vectors rows of a batch range whose event id is sampled, in apply order: [batch_seq, offset, vector]. */
async function* servedInOrder(ch: ClickHouseClient, range: BatchRange, below: number): AsyncGenerator<ServedRow> {
  const where = batchFilter(range);
  const sampled = below >= 2 ** 32 ? '' : `${where ? ' AND' : 'WHERE'} CRC32(event_id) < ${below}`;
  const rs = await ch.query({
    query: `SELECT batch_seq, offset, vector FROM served_vectors FINAL ${where}${sampled} ORDER BY batch_seq, offset`,
    format: 'JSONCompactEachRow',
    clickhouse_settings: { output_format_json_quote_64bit_integers: 0 },
  });
  for await (const rows of rs.stream()) for (const row of rows) yield row.json<ServedRow>();
}

const before = (aSeq: number, aOffset: number, bSeq: number, bOffset: number) =>
  aSeq < bSeq || (aSeq === bSeq && aOffset < bOffset);

const zero = (n: number): LiveCounts => ({ checked: 0, missing: 0, mismatches: new Array<number>(n).fill(0) });

export class LiveParity {
  private replay: Replay;
  private readonly below: number;
  private readonly agrees: (i: number, a: number, b: number) => boolean;
  /** Batches replayed through this number; impressions compared only after `from`. */
  private replayed = 0;
  private from = 0;
  /** The position as last flushed. */
  private flushed = 0;
  private pending: LiveCounts;
  private mismatchRows: LiveMismatch[] = [];
  readonly totals: LiveCounts;
  private warnedBehind = false;

  constructor(
    private readonly ch: ClickHouseClient,
    private readonly o: LiveParityOptions,
  ) {
    this.replay = this.newReplay();
    this.below = sampleThreshold(o.sample);
    this.agrees = agreement(o.features);
    const F = o.features.names.length;
    this.pending = zero(F);
    this.totals = zero(F);
    // Every feature's series from the start: an alert on its increase sees the first mismatch.
    for (const feature of o.features.names) o.metrics.mismatches.inc({ feature }, 0);
  }

  /** Impressions of batches numbered up to `batch` were checked before: the replay only rebuilds state from them. */
  resumeAfter(batch: number): void {
    if (this.replayed > 0) throw new Error('resumeAfter() comes before the first step');
    this.from = batch;
    this.flushed = batch;
  }

  /** Checked through this batch number. */
  get position(): number {
    return Math.max(this.replayed, this.from);
  }

  /** Whether impression `eventId` is in the sample. */
  sampled(eventId: string): boolean {
    return crc32(eventId) < this.below;
  }

  /**
   * Replays the batches settled since the last step and compares their sampled impressions; false when none had
   * settled. A failure (the store unreachable) leaves the position where it was: the next step reads the same range.
   */
  async step(): Promise<boolean> {
    const settled = await this.o.settled();
    if (settled < this.position) {
      // The stream's numbering is behind what was checked: another history (a new group, a cleared store).
      if (!this.warnedBehind)
        this.o.log.warn(
          { settled, checked_through: this.position },
          'the stream has settled fewer batches than were checked; waiting for it to pass',
        );
      this.warnedBehind = true;
      return false;
    }
    if (settled === this.replayed) return false;
    const range = { after: this.replayed, through: settled };
    const served = servedInOrder(this.ch, { after: Math.max(this.replayed, this.from), through: settled }, this.below);
    const counts = zero(this.o.features.names.length);
    const found: LiveMismatch[] = [];
    const names = this.o.features.names;
    const F = names.length;
    let s = await served.next();
    try {
      for await (const chunk of inChunks(fromClickHouse(this.ch, range))) {
        const { vectors, emitted } = this.replay.applyChunk(chunk);
        for (let k = 0; k < chunk.length; k++) {
          if (emitted[k] !== 1) continue;
          const r = chunk[k] as (typeof chunk)[number];
          const seq = r.batchSeq as number;
          const offset = r.offset as number;
          if (seq <= this.from || !this.sampled(r.event.event_id)) continue;
          // Served rows of impressions the replay did not apply would be a disagreement on admission itself.
          while (!s.done && before(s.value[0], s.value[1], seq, offset)) {
            this.o.log.warn(
              { batch_seq: s.value[0], offset: s.value[1] },
              'served vector of an impression not applied',
            );
            s = await served.next();
          }
          if (s.done || s.value[0] !== seq || s.value[1] !== offset) {
            counts.missing++;
            continue;
          }
          const vector = s.value[2];
          s = await served.next();
          counts.checked++;
          for (let i = 0; i < F; i++) {
            const recomputed = vectors[k * F + i] as number;
            const value = vector[i] as number;
            if (this.agrees(i, value, recomputed)) continue;
            counts.mismatches[i] = (counts.mismatches[i] as number) + 1;
            const slash = r.partition.lastIndexOf('/');
            found.push({
              at: Date.now(),
              event_id: r.event.event_id,
              topic: r.partition.slice(0, slash),
              partition: Number(r.partition.slice(slash + 1)),
              offset,
              event_time: r.event.event_time,
              feature: names[i] as string,
              served: value,
              recomputed,
            });
          }
        }
      }
    } catch (err) {
      // The replay's state took part of the range: it cannot take it again, so it starts over from the history's
      // start, comparing only after the position it had reached.
      await served.return(undefined);
      this.restart();
      throw err;
    }
    await served.return(undefined);
    this.replayed = settled;
    this.count(counts, found);
    return true;
  }

  private newReplay(): Replay {
    return new Replay(this.o.features, this.o.allowedLatenessMs, { partitions: this.o.partitions });
  }

  private restart(): void {
    const at = this.position;
    this.replay = this.newReplay();
    this.replayed = 0;
    this.from = at;
  }

  private count(counts: LiveCounts, found: LiveMismatch[]): void {
    const m = this.o.metrics;
    m.checked.inc(counts.checked);
    if (counts.missing) m.missing.inc(counts.missing);
    for (const x of found) {
      m.mismatches.inc({ feature: x.feature });
      this.o.log.error(
        {
          event_id: x.event_id,
          topic: x.topic,
          partition: x.partition,
          offset: x.offset,
          event_time: new Date(x.event_time).toISOString(),
          feature: x.feature,
          served: x.served,
          recomputed: x.recomputed,
        },
        'parity mismatch: served feature differs from the log',
      );
    }
    for (const c of [this.pending, this.totals]) {
      c.checked += counts.checked;
      c.missing += counts.missing;
      counts.mismatches.forEach((n, i) => {
        c.mismatches[i] = (c.mismatches[i] as number) + n;
      });
    }
    this.mismatchRows.push(...found);
  }

  /**
   * Writes what was counted since the last flush: the mismatch rows, then one parity_live row (which moves the
   * position a restart resumes from). Nothing when the position has not moved.
   */
  async flush(at = Date.now()): Promise<void> {
    const position = this.position;
    if (position === this.flushed) return;
    const range = `${this.flushed}-${position}`;
    if (this.mismatchRows.length > 0) {
      await insertNative(this.ch, {
        table: 'parity_mismatches',
        columns: MISMATCH_COLUMNS.map((c) => c.name),
        block: nativeBlock(MISMATCH_COLUMNS, this.mismatchRows),
        settings: {
          insert_deduplication_token: `parity_mismatches:${range}`,
          async_insert: 0,
          insert_distributed_sync: 1,
        },
      });
    }
    const row = { at, ...this.pending, features: this.o.features.names, last: position };
    await insertNative(this.ch, {
      table: 'parity_live',
      columns: LIVE_COLUMNS.map((c) => c.name),
      block: nativeBlock(LIVE_COLUMNS, [row]),
      settings: { insert_deduplication_token: `parity_live:${range}`, async_insert: 0, insert_distributed_sync: 1 },
    });
    this.mismatchRows = [];
    this.pending = zero(this.o.features.names.length);
    this.flushed = position;
  }

  /**
   * Steps every `intervalMs` and flushes every `flushMs` until `signal` aborts or `done()` is true (checked after a
   * step that found nothing new), then flushes a last time. Failures are logged and retried at the next step.
   */
  async follow(o: {
    intervalMs: number;
    flushMs: number;
    signal: AbortSignal;
    done?: () => Promise<boolean>;
  }): Promise<void> {
    let lastFlush = Date.now();
    while (!o.signal.aborted) {
      let moved = false;
      try {
        moved = await this.step();
        if (Date.now() - lastFlush >= o.flushMs) {
          await this.flush();
          lastFlush = Date.now();
        }
        if (!moved && o.done && (await o.done())) break;
      } catch (err) {
        this.o.log.warn({ err: (err as Error).message }, 'live parity step failed; trying again');
      }
      if (!moved) await sleep(o.intervalMs, o.signal);
    }
    // What settled up to the stop is counted too.
    await this.step().catch((err: Error) => this.o.log.warn({ err: err.message }, 'live parity: last step failed'));
    await this.flush();
  }

  /** Whether the check has reached everything the stream has settled. */
  async caughtUp(): Promise<boolean> {
    return this.position >= (await this.o.settled());
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}

const MISMATCH_COLUMNS: NativeColumn<LiveMismatch>[] = [
  native.time('at', (r) => r.at),
  native.string('event_id', (r) => r.event_id),
  native.string('topic', (r) => r.topic),
  native.u32('partition', (r) => r.partition),
  native.u64('offset', (r) => r.offset),
  native.time('event_time', (r) => r.event_time),
  native.string('feature', (r) => r.feature),
  native.f64('served', (r) => r.served),
  native.f64('recomputed', (r) => r.recomputed),
];

type LiveRow = LiveCounts & { at: number; features: readonly string[]; last: number };

const LIVE_COLUMNS: NativeColumn<LiveRow>[] = [
  native.time('at', (r) => r.at),
  native.u64('checked', (r) => r.checked),
  native.u64('missing', (r) => r.missing),
  native.array(
    'features',
    'String',
    (r) => r.features.length,
    (w, r) => {
      for (const f of r.features) w.string(f);
    },
  ),
  native.array(
    'mismatches',
    'UInt64',
    (r) => r.mismatches.length,
    (w, r) => {
      for (const n of r.mismatches) w.i64(n);
    },
  ),
  native.u64('last_batch_seq', (r) => r.last),
];
