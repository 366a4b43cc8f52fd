// The README's analyst queries run as written on a demo's data and say what they claim: each is read out of the
// README itself (so the text can't drift), run on the embedded ClickHouse the demo wrote, and its rows are checked
// against the pipeline's own outcomes (the stream's late count, the training set's metadata, the feature engine's
// read of the same events).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TrainingMeta } from '../../src/backfill/training-set.ts';
import type { AdClick, AdImpression } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import { ReferenceStore } from '../support/reference.ts';
import { embeddedEnv } from '../support/services.ts';

const readme = readFileSync(join(import.meta.dirname, '../../README.md'), 'utf8');
const section = /\n## Analysts: the ClickHouse tables\n([\s\S]*?)\n## /.exec(readme)?.[1] ?? '';

/** The README's query whose first line is `-- <title>`. */
function query(title: string): string {
  const blocks = [...section.matchAll(/```sql\n([\s\S]*?)```/g)].map((m) => m[1] as string);
  const found = blocks.filter((b) => b.startsWith(`-- ${title}\n`));
  expect(found, `one README query titled "${title}"`).toHaveLength(1);
  return found[0] as string;
}

const dir = mkdtempSync(join(tmpdir(), 'tributary-analysts-'));
const demoDir = join(dir, 'demo');
const env = embeddedEnv({
  TRIBUTARY_CLICKHOUSE_DIR: join(demoDir, 'clickhouse'),
});
const cli = (...a: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...a], { encoding: 'utf8', env });

const features = new FeatureSet(DEFAULT_GROUPS);
let ch: ClickHouseClient;
let demoOut = '';
let sqlCli: ReturnType<typeof cli>;
let badSqlCli: ReturnType<typeof cli>;

async function rows<T>(sql: string, params?: Record<string, string>): Promise<T[]> {
  const rs = await ch.query({
    query: sql,
    format: 'JSONEachRow',
    query_params: params,
    clickhouse_settings: { output_format_json_quote_64bit_integers: 0 },
  });
  return rs.json<T>();
}

const num = (s: string) => Number(s.replaceAll(',', ''));
/** "2026-11-01 00:05:00" (UTC) -> epoch ms. */
const utc = (s: string) => Date.parse(`${s.replace(' ', 'T')}Z`);

beforeAll(() => {
  const demo = cli('demo', '--days', '2', '--impressions-per-day', '2000', '--no-serve', '--out', demoDir);
  expect(demo.status, demo.stderr).toBe(0);
  demoOut = demo.stdout;
  // Through the CLI before this process opens the data folder (the embedded engine allows one process per folder).
  const lateQuery = join(dir, 'late.sql');
  writeFileSync(lateQuery, query('Late events by partition'));
  sqlCli = cli('sql', '--file', lateQuery, '--format', 'JSONEachRow');
  // The ad's history without its --param ad=...: ClickHouse refuses it.
  const historyQuery = join(dir, 'history.sql');
  writeFileSync(historyQuery, query("A feature's history for one ad"));
  badSqlCli = cli('sql', '--file', historyQuery);
}, 60_000);

beforeAll(async () => {
  ch = await openClickHouse({ dir: join(demoDir, 'clickhouse') });
});

afterAll(async () => {
  await ch?.close();
});

describe("the README's analyst queries, on a demo's data", () => {
  it('CTR by campaign and hour: a rate per campaign hour, clicks never above impressions', async () => {
    const r = await rows<{ campaign_id: string; impressions: number; clicks: number; ctr: number }>(
      query('CTR by campaign and hour'),
    );
    expect(r.length).toBeGreaterThan(0);
    for (const x of r) {
      expect(x.clicks).toBeLessThanOrEqual(x.impressions);
      expect(x.ctr).toBeGreaterThanOrEqual(0);
      expect(x.ctr).toBeLessThanOrEqual(1);
    }
    // Every clicked impression the training set labelled is among the clicked ones counted here.
    const meta = JSON.parse(readFileSync(join(demoDir, 'training.csv.meta.json'), 'utf8')) as TrainingMeta;
    expect(r.reduce((n, x) => n + x.clicks, 0)).toBeGreaterThanOrEqual(meta.positives);
    expect(meta.positives).toBeGreaterThan(0);
  });

  it("a feature's history for one ad equals the feature engine's read of the same events at every tile", async () => {
    // The ad with the most applied clicks, so both counts move.
    const [{ ad } = { ad: '' }] = await rows<{ ad: string }>(
      "SELECT ad_id AS ad FROM clicks FINAL WHERE verdict = 'applied' GROUP BY ad_id ORDER BY count() DESC, ad_id LIMIT 1",
    );
    const history = await rows<{ t: string; impressions_1h: number; clicks_1h: number; ctr_1h: number }>(
      query("A feature's history for one ad"),
      { ad },
    );
    expect(history.length).toBeGreaterThan(0);
    expect(history.some((h) => h.clicks_1h > 0)).toBe(true);

    // The engine's read path over a store holding every event the stream applied for the ad (no pruning).
    const cols = 'user_id, ad_id, campaign_id, advertiser_id, category, publisher_id, device, os';
    const impressions = await rows<AdImpression>(
      `SELECT event_id, toUnixTimestamp64Milli(event_time) AS event_time, request_id, ${cols}, position, bid
       FROM impressions FINAL WHERE ad_id = {ad:String} AND verdict = 'applied'`,
      { ad },
    );
    const clicks = await rows<AdClick>(
      `SELECT event_id, toUnixTimestamp64Milli(event_time) AS event_time, impression_id,
              toUnixTimestamp64Milli(impression_time) AS impression_time, ${cols}
       FROM clicks FINAL WHERE ad_id = {ad:String} AND verdict = 'applied'`,
      { ad },
    );
    const store = new ReferenceStore(features);
    for (const e of impressions) store.apply('impression', e);
    for (const e of clicks) store.apply('click', e);
    const at = (name: string) => features.names.indexOf(name);
    const [imp, clk, ctr] = [at('ad__impressions_1h'), at('ad__clicks_1h'), at('ad__ctr_1h')];
    const context = impressions[0] as AdImpression;
    const read = (t: number) => {
      const plan = features.plan([context], t);
      return features.assemble(plan, store.readSync(plan.requests))[0] as Float64Array;
    };
    const byTime = new Map(history.map((h) => [utc(h.t), h]));
    const TILE = 5 * 60_000;
    const first = utc((history[0] as { t: string }).t);
    const last = utc((history.at(-1) as { t: string }).t);
    // Every tile start from the first row to the last: a missing row reads 0 (and the prior CTR).
    for (let t = first; t <= last; t += TILE) {
      const v = read(t);
      const h = byTime.get(t) ?? { impressions_1h: 0, clicks_1h: 0, ctr_1h: 0.02 };
      expect([h.impressions_1h, h.clicks_1h], new Date(t).toISOString()).toEqual([v[imp], v[clk]]);
      expect(h.ctr_1h).toBeCloseTo(v[ctr] as number, 12);
    }
  });

  it("late events by partition add up to the stream's late count", async () => {
    const r = await rows<{ topic: string; partition: number; late: number; events: number }>(
      query('Late events by partition'),
    );
    const streamLate = num(/([\d,]+) late\b/.exec(demoOut)?.[1] ?? 'NaN');
    expect(streamLate).toBeGreaterThan(0);
    expect(r.reduce((n, x) => n + x.late, 0)).toBe(streamLate);
    expect(new Set(r.map((x) => x.topic)).size).toBe(2); // impressions and clicks
    // The same rows through `tributary sql`.
    expect(sqlCli.status, sqlCli.stderr).toBe(0);
    const printed = sqlCli.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as unknown);
    expect(printed).toEqual(r);
  });

  it('served vs backfill: one impression, feature by feature, equal', async () => {
    // A few impressions: the busiest user's latest, and some others.
    const picks = await rows<{ event_id: string }>(
      `SELECT event_id FROM training_rows
       ORDER BY user__impressions_24h DESC, ad__impressions_1h DESC, event_time DESC, event_id LIMIT 3`,
    );
    expect(picks).toHaveLength(3);
    for (const { event_id } of picks) {
      const r = await rows<{ feature: string; served: number; backfill: number; equal: number }>(
        query('Served vs backfill for one impression'),
        { impression: event_id },
      );
      expect(r.map((x) => x.feature)).toEqual(features.names);
      for (const x of r) expect([x.feature, x.served, x.equal]).toEqual([x.feature, x.backfill, 1]);
      expect(r.some((x) => x.feature.startsWith('user__impressions') && x.served > 0)).toBe(true);
    }
  });

  it("training-set label balance sums to the training set's rows and positives", async () => {
    const r = await rows<{ run_id: string; label: number; rows: number; share: number }>(
      query('Training-set label balance'),
    );
    const meta = JSON.parse(readFileSync(join(demoDir, 'training.csv.meta.json'), 'utf8')) as TrainingMeta;
    expect(r.reduce((n, x) => n + x.rows, 0)).toBe(meta.rows);
    expect(r.find((x) => x.label === 1)?.rows).toBe(meta.positives);
    expect(r.reduce((s, x) => s + x.share, 0)).toBeCloseTo(1, 12);
  });

  it('tributary sql answers a failing query with exit 2 and the reason in one line', () => {
    expect(badSqlCli.status).toBe(2);
    expect(badSqlCli.stderr.trim().split('\n')).toEqual([expect.stringMatching(/the query failed: .*`ad`/)]);
  });
});
