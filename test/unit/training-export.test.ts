// Training-set outputs on the embedded ClickHouse and through a server's HTTP interface (a stand-in answered by the
// same embedded engine: no ClickHouse server is installable here): the Parquet file and the analysts' table hold
// exactly the CSV's rows (every value bit for bit, typed columns), and a rerun replaces its run's rows instead of
// adding to them. Through the server, the files travel as request bodies and responses: no statement reads or
// writes them with file().
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BackfillOptions, runBackfill } from '../../src/backfill/run.ts';
import { fromEventFile } from '../../src/backfill/sources.ts';
import { parquetConverter, writeTrainingTable } from '../../src/backfill/training-clickhouse.ts';
import { ConvertingTrainingWriter, ROW_KEYS, type TrainingMeta } from '../../src/backfill/training-set.ts';
import { writeEventFile } from '../../src/events/event-file.ts';
import { generate } from '../../src/events/generator.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import { type ClickHouseHttpStandIn, startClickHouseHttp } from '../support/clickhouse-http.ts';

const dir = mkdtempSync(join(tmpdir(), 'training-export-'));
const features = new FeatureSet(DEFAULT_GROUPS);
const HOUR = 3600_000;
let ch: ClickHouseClient;
let http: ClickHouseHttpStandIn;
let server: ClickHouseClient;
let opts: BackfillOptions;
let csv: string[][];
let header: string[];
let meta: TrainingMeta;

beforeAll(async () => {
  ch = await openClickHouse({ dir: join(dir, 'ch') });
  http = await startClickHouseHttp(join(dir, 'ch'));
  server = await openClickHouse({ url: http.url, dir: 'unused', database: 'srv' });
  const events = join(dir, 'events.ndjson');
  await writeEventFile(events, generate({ seed: 5, days: 1, impressionsPerDay: 3000, users: 300, ads: 60 }));
  opts = {
    features,
    open: () => fromEventFile(events),
    sourceName: 'file',
    out: join(dir, 'train.csv'),
    attributionMs: HOUR,
    allowedLatenessMs: HOUR,
  };
  meta = await runBackfill(opts);
  const lines = readFileSync(opts.out, 'utf8').trim().split('\n');
  header = (lines[0] as string).split(',');
  csv = lines.slice(1).map((l) => l.split(','));
}, 60_000);
afterAll(async () => {
  await server?.close();
  await http?.close();
  await ch?.close();
});

/** Rows as the CSV has them, from a query returning the same columns with event_time as epoch ms. */
async function rowsOf(query: string, client = ch): Promise<string[][]> {
  const rs = await client.query({
    query: `${query} SETTINGS output_format_json_quote_64bit_integers = 0`,
    format: 'JSONCompactEachRow',
  });
  return (await rs.json<unknown[]>()).map((r) => r.map((v) => String(v)));
}

/** Same values exactly: numbers compared as doubles, so "1e-7" and 1e-7 are equal but 0.1 and 0.1000001 are not. */
function expectSameRows(actual: string[][], expected: string[][]) {
  const key = (r: string[]) => `${r[1]}|${r[0]}`;
  const sorted = (rows: string[][]) => [...rows].sort((a, b) => (key(a) < key(b) ? -1 : 1));
  const a = sorted(actual);
  const e = sorted(expected);
  expect(a.length).toBe(e.length);
  const strings = ROW_KEYS.length;
  for (let i = 0; i < e.length; i++) {
    const ar = a[i] as string[];
    const er = e[i] as string[];
    expect(ar.slice(0, strings)).toEqual(er.slice(0, strings));
    expect(ar.slice(strings).map(Number)).toEqual(er.slice(strings).map(Number));
  }
}

const columns = () =>
  header.map((c) => (c === 'event_time' ? 'toUnixTimestamp64Milli(event_time)' : `\`${c}\``)).join(', ');

function spawnAsync(cmd: string, args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((ok, fail) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    p.on('error', fail);
    p.on('close', (status) => ok({ status, stderr }));
  });
}

/** No statement the stand-in ran touched a file but its own copies of request bodies. */
function expectNoServerFiles(from: number) {
  const files = http.statements.slice(from).flatMap((q) => [...q.matchAll(/file\('([^']*)'/g)].map((m) => m[1]));
  expect(files.every((f) => f?.includes('clickhouse-http-'))).toBe(true);
}

describe.each([
  ['embedded', () => ch],
  ['server', () => server],
])('training-set outputs (%s)', (target, client) => {
  it('writes Parquet with typed columns holding exactly the CSV rows', async () => {
    const out = join(dir, `train-${target}.parquet`);
    const seen = http.statements.length;
    const pmeta = await runBackfill({
      ...opts,
      out,
      writer: (cols) => new ConvertingTrainingWriter(out, cols, parquetConverter(client())),
    });
    expectNoServerFiles(seen);
    expect({ ...pmeta }).toEqual(meta);
    expect(JSON.parse(readFileSync(`${out}.meta.json`, 'utf8')).features).toEqual(features.names);
    const types = await (await ch.query({ query: `DESCRIBE file('${out}', 'Parquet')`, format: 'JSONEachRow' })).json<{
      name: string;
      type: string;
    }>();
    expect(types.map((t) => t.name)).toEqual(header);
    const typeOf = new Map(types.map((t) => [t.name, t.type]));
    expect(typeOf.get('event_time')).toBe("DateTime64(3, 'UTC')");
    expect(typeOf.get('label')).toBe('UInt8');
    expect(typeOf.get('user_id')).toBe('String');
    expect(features.names.every((n) => typeOf.get(n) === 'Float64')).toBe(true);
    expect(csv.length).toBeGreaterThan(2000);
    expectSameRows(await rowsOf(`SELECT ${columns()} FROM file('${out}', 'Parquet')`), csv);
  }, 60_000);

  it('keeps any text and every double bit for bit in Parquet', async () => {
    const out = join(dir, `odd-${target}.parquet`);
    const columns = [
      { index: 0, name: 'a' },
      { index: 1, name: 'b' },
    ];
    const odd = ['é, "quoted" ü🙂', 'x'.repeat(200), 'ü'.repeat(100)];
    const values = [
      [0.1 + 0.2, 5e-324],
      [1.7976931348623157e308, -123456.789e-200],
      [1 / 3, 0],
    ];
    const writer = new ConvertingTrainingWriter(out, columns, parquetConverter(client()));
    for (const [i, id] of odd.entries()) {
      const impression = {
        ...JSON.parse(readFileSync(join(dir, 'events.ndjson'), 'utf8').split('\n')[0] as string).event,
      };
      await writer.write({
        impression: { ...impression, event_id: id, user_id: id, os: id, event_time: 1_700_000_000_123 + i },
        label: (i % 2) as 0 | 1,
        vector: Float64Array.from(values[i] as number[]),
      });
    }
    await writer.close(meta);
    const back = await (
      await ch.query({
        query: `SELECT event_id, user_id, os, toString(toUnixTimestamp64Milli(event_time)) AS t, label, a, b FROM file('${out}', 'Parquet') ORDER BY t`,
        format: 'JSONEachRow',
      })
    ).json<Record<string, unknown>>();
    expect(back).toEqual(
      odd.map((id, i) => ({
        event_id: id,
        user_id: id,
        os: id,
        t: String(1_700_000_000_123 + i),
        label: i % 2,
        a: values[i]?.[0],
        b: values[i]?.[1],
      })),
    );
  }, 60_000);

  it('loads the rows into a table, one partition per run; a rerun replaces its rows', async () => {
    const seen = http.statements.length;
    const write = (runId: string) =>
      writeTrainingTable(client(), { table: 'train_rows', runId, file: opts.out, format: 'csv', meta });
    await write('run-a');
    await write('run-a');
    await write('run-b');
    expectNoServerFiles(seen);
    const runA = `SELECT ${columns()} FROM train_rows WHERE run_id = 'run-a'`;
    expectSameRows(await rowsOf(runA, client()), csv);
    const [[total]] = (await rowsOf('SELECT count() FROM train_rows', client())) as [[string]];
    expect(Number(total)).toBe(2 * csv.length);
    const catalog = await (
      await client().query({
        query: `SELECT run_id, rows, definitions_version, features FROM training_sets FINAL WHERE table = 'train_rows' ORDER BY run_id`,
        format: 'JSONEachRow',
      })
    ).json<{ run_id: string; rows: string; definitions_version: string; features: string[] }>();
    expect(catalog.map((c) => [c.run_id, Number(c.rows), c.definitions_version])).toEqual([
      ['run-a', csv.length, features.version],
      ['run-b', csv.length, features.version],
    ]);
    expect(catalog[0]?.features).toEqual(features.names);
    const [[version]] = (await rowsOf(`SELECT DISTINCT definitions_version FROM train_rows`, client())) as [[string]];
    expect(version).toBe(features.version);

    // The Parquet file loads the same rows (typed columns read as they were written).
    await writeTrainingTable(client(), {
      table: 'train_rows',
      runId: 'run-p',
      file: join(dir, `train-${target}.parquet`),
      format: 'parquet',
      meta,
    });
    expectSameRows(await rowsOf(`SELECT ${columns()} FROM train_rows WHERE run_id = 'run-p'`, client()), csv);

    // A table built for other features is not silently mixed with these.
    await expect(
      writeTrainingTable(client(), {
        table: 'train_rows',
        runId: 'run-c',
        file: opts.out,
        format: 'csv',
        meta: { ...meta, features: meta.features.slice(1) },
      }),
    ).rejects.toThrow(/exists with other columns/);
  }, 60_000);

  it('runs from the command line: Parquet file and table, twice over (the rerun replaces its run)', {
    timeout: 90_000,
  }, async () => {
    const out = join(dir, `cli-${target}.parquet`);
    const engine = target === 'server' ? ['--clickhouse', http.url] : ['--clickhouse-dir', join(dir, 'cli-ch')];
    // Asynchronous: the stand-in answers from this process.
    const backfill = () =>
      spawnAsync(process.execPath, [
        '--import',
        'tsx',
        'src/cli/main.ts',
        ...engine,
        'backfill',
        '--source',
        `file:${join(dir, 'events.ndjson')}`,
        '--out',
        out,
        '--table',
        'cli_rows',
      ]);
    const runIds: string[] = [];
    for (const _ of [0, 1]) {
      const r = await backfill();
      expect(r.status, r.stderr).toBe(0);
      const done = JSON.parse(r.stderr.trim().split('\n').pop() as string);
      expect(done).toMatchObject({ msg: 'backfill done', rows: csv.length, format: 'parquet', table: 'cli_rows' });
      runIds.push(done.run_id);
    }
    // The same parameters name the same run, so the rerun replaced the first run's partition.
    expect(runIds[1]).toBe(runIds[0]);
    expect(runIds[0]).toMatch(/^[0-9a-f]{16}$/);
    expect(existsSync(out) && !existsSync(`${out}.partial`)).toBe(true);
    expectSameRows(await rowsOf(`SELECT ${columns()} FROM file('${out}', 'Parquet')`), csv);
    if (target === 'server') {
      const rows = `SELECT ${columns()} FROM default.cli_rows WHERE run_id = '${runIds[0]}'`;
      expectSameRows(await rowsOf(rows, server), csv);
    }
  });
});
