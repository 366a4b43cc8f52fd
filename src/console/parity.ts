// The Parity page's data: the last `tributary parity` run by feature (ClickHouse `parity_runs`) and the live check's
// intervals and mismatches (`parity_live`, `parity_mismatches`), both written by the parity work. A missing table is
// not an error: the page says what to run.
import type { ClickHouseClient } from '@clickhouse/client';

export interface ParityRun {
  runAt: number;
  impressions: number;
  missingServed: number;
  missingSql: number;
  mismatches: number;
  byFeature: { feature: string; served: number; sql: number }[];
  examples: unknown;
}

export interface LiveInterval {
  at: number;
  checked: number;
  missing: number;
  mismatches: number;
  lastBatchSeq: number;
}

export interface LiveMismatch {
  at: number;
  eventId: string;
  topic: string;
  partition: number;
  offset: number;
  eventTime: number;
  feature: string;
  served: number;
  recomputed: number;
}

export interface ParityView {
  /** Null: no run recorded (or no table yet); `runHint` says what to run. */
  last: ParityRun | null;
  runHint?: string;
  live: {
    intervals: LiveInterval[];
    checked: number;
    mismatches: number;
    byFeature: { feature: string; mismatches: number }[];
    recent: LiveMismatch[];
  } | null;
  liveHint?: string;
}

/** Live intervals shown (the newest), mismatches listed. */
const LIVE_INTERVALS = 360;
const RECENT_MISMATCHES = 20;

async function exists(ch: ClickHouseClient, table: string): Promise<boolean> {
  const rs = await ch.query({ query: `EXISTS TABLE ${table}`, format: 'JSONEachRow' });
  const [row] = await rs.json<Record<string, unknown>>();
  return Number(Object.values(row ?? {})[0]) === 1;
}

async function rows<T>(ch: ClickHouseClient, query: string): Promise<T[]> {
  return (await ch.query({ query, format: 'JSONEachRow' })).json<T>();
}

const ms = (c: string) => `toUnixTimestamp64Milli(${c}) AS ${c}`;

export async function readParity(ch: ClickHouseClient): Promise<ParityView> {
  const view: ParityView = { last: null, live: null };
  if (await exists(ch, 'parity_runs')) {
    const [r] = await rows<Record<string, unknown>>(
      ch,
      `SELECT ${ms('run_at')}, impressions, missing_served, missing_sql, mismatches, features, served_mismatches,
              sql_mismatches, examples FROM parity_runs ORDER BY run_at DESC LIMIT 1`,
    );
    if (r) {
      const names = r.features as string[];
      const served = (r.served_mismatches as unknown[]).map(Number);
      const sql = (r.sql_mismatches as unknown[]).map(Number);
      let examples: unknown = null;
      try {
        examples = JSON.parse(String(r.examples || 'null'));
      } catch {
        examples = String(r.examples);
      }
      view.last = {
        runAt: Number(r.run_at),
        impressions: Number(r.impressions),
        missingServed: Number(r.missing_served),
        missingSql: Number(r.missing_sql),
        mismatches: Number(r.mismatches),
        byFeature: names.map((feature, i) => ({ feature, served: served[i] ?? 0, sql: sql[i] ?? 0 })),
        examples,
      };
    }
  }
  if (!view.last)
    view.runHint =
      'no parity run yet: run `tributary parity` (it compares served vectors, the backfill and independent SQL and records the result here)';
  if (await exists(ch, 'parity_live')) {
    const raw = await rows<Record<string, unknown>>(
      ch,
      `SELECT ${ms('at')}, checked, missing, features, mismatches, last_batch_seq
       FROM parity_live ORDER BY at DESC LIMIT ${LIVE_INTERVALS}`,
    );
    const byFeature = new Map<string, number>();
    const intervals = raw.reverse().map((r) => {
      const counts = (r.mismatches as unknown[]).map(Number);
      (r.features as string[]).forEach((f, i) => {
        byFeature.set(f, (byFeature.get(f) ?? 0) + (counts[i] ?? 0));
      });
      return {
        at: Number(r.at),
        checked: Number(r.checked),
        missing: Number(r.missing),
        mismatches: counts.reduce((a, b) => a + b, 0),
        lastBatchSeq: Number(r.last_batch_seq),
      };
    });
    let recent: LiveMismatch[] = [];
    if (await exists(ch, 'parity_mismatches'))
      recent = (
        await rows<Record<string, unknown>>(
          ch,
          `SELECT ${ms('at')}, event_id, topic, partition, offset, ${ms('event_time')}, feature, served, recomputed
           FROM parity_mismatches ORDER BY at DESC LIMIT ${RECENT_MISMATCHES}`,
        )
      ).map((r) => ({
        at: Number(r.at),
        eventId: String(r.event_id),
        topic: String(r.topic),
        partition: Number(r.partition),
        offset: Number(r.offset),
        eventTime: Number(r.event_time),
        feature: String(r.feature),
        served: Number(r.served),
        recomputed: Number(r.recomputed),
      }));
    if (intervals.length)
      view.live = {
        intervals,
        checked: intervals.reduce((a, b) => a + b.checked, 0),
        mismatches: intervals.reduce((a, b) => a + b.mismatches, 0),
        byFeature: [...byFeature].map(([feature, mismatches]) => ({ feature, mismatches })),
        recent,
      };
  }
  if (!view.live)
    view.liveHint =
      'no live parity check has reported yet: run `tributary verify --follow` beside the stream (it samples served vectors and recomputes them from the log)';
  return view;
}
