// The offline store on the real embedded engine (chdb) in a temp dir: no server needed.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { ClickHouseClient } from '@clickhouse/client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generate } from '../../src/events/generator.ts';
import type { AdImpression } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { tileOf } from '../../src/features/window.ts';
import { ClickHouseUnavailableError, openClickHouse } from '../../src/offline/clickhouse.ts';
import { ensureOfflineSchema } from '../../src/offline/schema.ts';
import {
  type ClickRow,
  type ImpressionRow,
  OfflineSink,
  type TileOp,
  type TileRow,
  tileRowsOf,
} from '../../src/offline/sink.ts';
import { startClickHouseHttp } from '../support/clickhouse-http.ts';

const T0 = Date.UTC(2026, 0, 15, 12, 0, 0, 123);

function impression(offset: number, over: Partial<ImpressionRow> = {}): ImpressionRow {
  return {
    event_id: `imp-${offset}`,
    event_time: T0 + offset,
    request_id: offset % 2 ? null : `req-${offset}`,
    user_id: `u-${offset % 3}`,
    ad_id: `ad-${offset % 2}`,
    campaign_id: 'c-1',
    advertiser_id: 'adv-1',
    category: 'sports',
    publisher_id: 'pub-1',
    device: 'mobile',
    os: 'ios',
    position: offset % 2 ? null : 1,
    bid: offset % 2 ? null : 0.25,
    topic: 'impressions',
    partition: 2,
    offset,
    ingest_time: T0 + offset + 7,
    batch_seq: 1,
    verdict: 'applied',
    ...over,
  };
}

function click(offset: number): ClickRow {
  return {
    event_id: `clk-${offset}`,
    event_time: T0 + 60_000 + offset,
    impression_id: `imp-${offset}`,
    impression_time: T0 + offset,
    user_id: 'u-1',
    ad_id: 'ad-1',
    campaign_id: 'c-1',
    advertiser_id: 'adv-1',
    category: 'sports',
    publisher_id: 'pub-1',
    device: 'desktop',
    os: 'linux',
    topic: 'clicks',
    partition: 0,
    offset,
    ingest_time: T0 + 60_000 + offset + 3,
    batch_seq: 2,
    verdict: offset === 1 ? 'late' : 'applied',
  };
}

const tile = (entity: string, series: string, value: number, op: 'incr' | 'max', batch: string): TileRow => ({
  entity,
  series: [series],
  tiles: [29401234],
  values: [value],
  ops: [op],
  batch,
  written_at: T0,
});

/** A tile row as the table gives it back (its columns' names). */
const stored = ({ series, tiles, values, ops, ...rest }: TileRow) => ({
  ...rest,
  tile_fields: series.map((s, i) => `${s}:${tiles[i]}`),
  tile_values: values,
  tile_ops: ops,
});

const ms = (c: string) => `toUnixTimestamp64Milli(${c}) AS ${c}`;
const TIMES: Record<string, string[]> = {
  impressions: ['event_time', 'ingest_time'],
  clicks: ['event_time', 'impression_time', 'ingest_time'],
  feature_tile_batches: ['written_at'],
  served_vectors: ['event_time', 'ingest_time'],
};

let dir: string;
let db = 0;
let client: ClickHouseClient;

async function rows(table: string, order: string, final = false): Promise<unknown[]> {
  const times = (TIMES[table] ?? []).map(ms).join(', ');
  const rs = await client.query({
    query: `SELECT * REPLACE (${times}) FROM ${table} ${final ? 'FINAL' : ''} ORDER BY ${order}`,
    format: 'JSONEachRow',
    clickhouse_settings: { output_format_json_quote_64bit_integers: 0 },
  });
  return rs.json();
}

async function count(table: string, final = false): Promise<number> {
  const rs = await client.query({ query: `SELECT count() AS n FROM ${table} ${final ? 'FINAL' : ''}`, format: 'JSON' });
  return Number((await rs.json<{ n: number | string }>()).data[0]?.n);
}

describe('offline store on the embedded ClickHouse engine', () => {
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tributary-offline-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  // Each test gets its own database in the one data dir (the engine binds one dir per process).
  async function open(): Promise<ClickHouseClient> {
    db++;
    client = await openClickHouse({ dir, database: `t${db}` });
    return client;
  }
  afterEach(async () => {
    await client?.close();
  });

  it('creates the schema idempotently', async () => {
    await open();
    await ensureOfflineSchema(client);
    await ensureOfflineSchema(client);
    const rs = await client.query({
      query: `SELECT name, engine, sorting_key FROM system.tables WHERE database = currentDatabase() ORDER BY name`,
      format: 'JSONEachRow',
    });
    expect(await rs.json()).toEqual([
      { name: 'clicks', engine: 'ReplacingMergeTree', sorting_key: 'ad_id, event_time, topic, partition, offset' },
      { name: 'feature_tile_batches', engine: 'MergeTree', sorting_key: 'entity' },
      { name: 'feature_tiles_current', engine: 'View', sorting_key: '' },
      { name: 'impressions', engine: 'ReplacingMergeTree', sorting_key: 'ad_id, event_time, topic, partition, offset' },
      { name: 'parity_live', engine: 'MergeTree', sorting_key: 'at' },
      { name: 'parity_mismatches', engine: 'ReplacingMergeTree', sorting_key: 'topic, partition, offset, feature' },
      { name: 'parity_runs', engine: 'MergeTree', sorting_key: 'run_at' },
      { name: 'served_vectors', engine: 'ReplacingMergeTree', sorting_key: 'topic, partition, offset' },
    ]);
  });

  it('writes a batch and reads back exactly the rows written', async () => {
    await open();
    await ensureOfflineSchema(client);
    // Ids as producers may send them: the text format's separators and escapes, quotes, non-ASCII.
    const odd = 'u\t1\n"q\'\\N\r\0é😀';
    const impressions = [
      impression(0),
      impression(1, { user_id: odd, event_time: Date.UTC(1969, 11, 31, 23, 59, 59, 999) }),
      impression(2, { verdict: 'duplicate', request_id: '\\N', bid: 0.1 + 0.2 }),
    ];
    const clicks = [click(0), { ...click(1), impression_id: odd }];
    const tiles = [
      {
        ...tile('ad:ad-0', '0.60', 3, 'incr', 'b1'),
        series: ['0.60', '1.60', "odd 'series' \\ \t"],
        tiles: [29401234, 29401234, -3],
        values: [3, T0, -1],
        ops: ['incr', 'max', 'incr'] as TileOp[],
      },
      tile(`user:${odd}`, '2.60', -5, 'incr', 'b1'),
    ];
    const served = [{ ...impression(3), vector: Float64Array.from([0.1, 1e-7, 3, 0.1 + 0.2, -2.5e300]) }].map(
      ({ event_id, event_time, topic, partition, offset, ingest_time, batch_seq, vector }) => ({
        event_id,
        event_time,
        topic,
        partition,
        offset,
        ingest_time,
        batch_seq,
        vector,
      }),
    );
    await new OfflineSink(client).writeBatch('b1', { impressions, clicks, tiles, served });
    expect(await rows('impressions', 'offset')).toEqual(impressions);
    expect(await rows('clicks', 'offset')).toEqual(clicks);
    expect(await rows('feature_tile_batches', 'entity')).toEqual(tiles.map(stored));
    expect(await rows('served_vectors', 'offset')).toEqual(served.map((r) => ({ ...r, vector: [...r.vector] })));
  });

  it('inserts into a server as its HTTP interface takes Native blocks (dedup token included)', async () => {
    await open();
    // The schema and the inserts through the HTTP client, to a stand-in answered by the same engine.
    const http = await startClickHouseHttp(dir);
    const server = await openClickHouse({ url: http.url, dir: 'unused', database: `t${db}` });
    try {
      await ensureOfflineSchema(server);
      const batch = { impressions: [impression(0), impression(1)], clicks: [click(0)], tiles: [] };
      const sink = new OfflineSink(server);
      const seen = http.statements.length;
      await sink.writeBatch('b1', batch);
      await sink.writeBatch('b1', batch);
      const inserts = http.statements.slice(seen);
      expect(inserts).toHaveLength(4);
      // The block arrived as the body of `INSERT ... FORMAT Native` (the stand-in reads it from its own file), with
      // the settings a cluster's Distributed table needs to keep the token (schema.ts).
      expect(
        inserts.every(
          (q) =>
            q.includes("insert_deduplication_token = 'b1:") &&
            q.includes('insert_distributed_sync = 1') &&
            q.includes("'Native')"),
        ),
      ).toBe(true);
      expect(await rows('impressions', 'offset')).toEqual(batch.impressions);
      expect(await rows('clicks', 'offset')).toEqual(batch.clicks);
    } finally {
      await server.close();
      await http.close();
    }
  });

  it('writing the same batch id twice inserts nothing the second time', async () => {
    await open();
    await ensureOfflineSchema(client);
    const sink = new OfflineSink(client);
    const batch = {
      impressions: [impression(0), impression(1)],
      clicks: [click(0)],
      tiles: [tile('ad:ad-0', 'f', 1, 'incr', 'b1')],
    };
    await sink.writeBatch('b1', batch);
    await sink.writeBatch('b1', batch);
    // Without FINAL: the second insert was dropped by insert deduplication, not collapsed later by a merge.
    expect(await count('impressions')).toBe(2);
    expect(await count('clicks')).toBe(1);
    expect(await count('feature_tile_batches')).toBe(1);
    expect(await count('impressions', true)).toBe(2);
    // The token is per table: the same id on different tables doesn't collide (all three were written once).
  });

  it('collapses a message re-inserted by a different batch (same Kafka coordinates) under FINAL', async () => {
    await open();
    await ensureOfflineSchema(client);
    const sink = new OfflineSink(client);
    await sink.writeBatch('impressions/2/0-1', { impressions: [impression(0), impression(1)], clicks: [], tiles: [] });
    // A replay that formed a different batch: offset 1 again (now judged a duplicate) plus offset 2.
    const replay = [impression(1, { verdict: 'duplicate' }), impression(2)];
    await sink.writeBatch('impressions/2/1-2', { impressions: replay, clicks: [], tiles: [] });
    expect(await count('impressions')).toBe(4);
    expect(await count('impressions', true)).toBe(3);
    const final = (await rows('impressions', 'offset', true)) as ImpressionRow[];
    expect(final.map((r) => [r.offset, r.verdict])).toEqual([
      [0, 'applied'],
      [1, 'duplicate'], // the last insert wins
      [2, 'applied'],
    ]);
  });

  it("tile rows hold a batch's updates merged per entity, series and tile", () => {
    const features = new FeatureSet(DEFAULT_GROUPS);
    const template = generate({ seed: 3, days: 1, impressionsPerDay: 50 }).find((r) => r.record.kind === 'impression')
      ?.record.event as AdImpression;
    const at = (event_time: number, n: number) => ({ ...template, ad_id: 'ad-7', event_id: `e${n}`, event_time });
    const events = [at(T0, 1), at(T0 + 1, 2), at(T0 - 60_000, 3), at(T0 + 2, 4)];
    const rows = tileRowsOf(features, { source: 'impression', events }, 'b', T0);
    const ad = rows.find((r) => r.entity === 'ad:ad-7');
    const impressions = features.groups[0]?.series.find((s) => s.agg.name === 'impressions' && s.tileMs === 60_000);
    const counts = new Map<number, number>();
    ad?.series.forEach((id, i) => {
      if (id === impressions?.id) counts.set(ad.tiles[i] as number, ad.values[i] as number);
    });
    expect(counts).toEqual(
      new Map([
        [tileOf(T0, 60_000), 3],
        [tileOf(T0 - 60_000, 60_000), 1],
      ]),
    );
    expect(ad?.ops.every((op) => op === 'incr')).toBe(true);
    // The next batch starts from nothing: the same events give the same rows, not doubled ones.
    expect(tileRowsOf(features, { source: 'impression', events }, 'b', T0)).toEqual(rows);
    // Every entity of each event, one row each; no distinct members (the user's distinct ads) among the series.
    expect(rows.length).toBe(new Set(rows.map((r) => r.entity)).size);
    const users = features.groups.find((g) => g.group.entity.name === 'user');
    const distinct = new Set(users?.series.filter((s) => s.op.merge === 'union').map((s) => s.id));
    expect(distinct.size).toBeGreaterThan(0);
    const user = rows.find((r) => r.entity === `user:${template.user_id}`);
    expect(user?.series.length).toBeGreaterThan(0);
    expect(user?.series.some((id) => distinct.has(id))).toBe(false);
  });

  it('feature_tiles_current sums incr tiles and maxes max tiles', async () => {
    await open();
    await ensureOfflineSchema(client);
    const sink = new OfflineSink(client);
    const row = (entity: string, series: string[], tiles: number[], values: number[], ops: TileOp[]) => ({
      entity,
      series,
      tiles,
      values,
      ops,
      batch: '',
      written_at: 0,
    });
    const tiles1 = [
      { ...row('ad:ad-7', ['0.60', '2.60', '0.60'], [100, 100, 99], [6, T0 + 5, 5], ['incr', 'max', 'incr']) },
    ].map((r) => ({ ...r, batch: 'impressions/0/0-9', written_at: T0 }));
    const tiles2 = [
      row('ad:ad-7', ['0.60', '2.60'], [100, 100], [10, T0 + 2], ['incr', 'max']),
      row('user:u-1', ['0.60'], [100], [1], ['incr']),
    ].map((r) => ({ ...r, batch: 'impressions/0/10-19', written_at: T0 + 1000 }));
    const empty = { impressions: [], clicks: [] };
    await sink.writeBatch('impressions/0/0-9', { ...empty, tiles: tiles1 });
    await sink.writeBatch('impressions/0/10-19', { ...empty, tiles: tiles2 });
    await sink.writeBatch('impressions/0/10-19', { ...empty, tiles: tiles2 }); // a retry: not counted twice
    const rs = await client.query({
      query: `SELECT entity, field, op, value, ${ms('written_at')} FROM feature_tiles_current ORDER BY entity, field`,
      format: 'JSONEachRow',
      clickhouse_settings: { output_format_json_quote_64bit_integers: 0 },
    });
    expect(await rs.json()).toEqual([
      { entity: 'ad:ad-7', field: '0.60:100', op: 'incr', value: 16, written_at: T0 + 1000 },
      { entity: 'ad:ad-7', field: '0.60:99', op: 'incr', value: 5, written_at: T0 },
      { entity: 'ad:ad-7', field: '2.60:100', op: 'max', value: T0 + 5, written_at: T0 + 1000 },
      { entity: 'user:u-1', field: '0.60:100', op: 'incr', value: 1, written_at: T0 + 1000 },
    ]);
  });

  it("leaves the client's later inserts alone (the dedup token is scoped to the batch's statements)", async () => {
    await open();
    await ensureOfflineSchema(client);
    await new OfflineSink(client).writeBatch('b1', {
      impressions: [],
      clicks: [],
      tiles: [tile('e', 'f', 1, 'incr', 'b1')],
    });
    const other = { ...stored(tile('e', 'f', 2, 'incr', 'manual')), written_at: '2026-01-15 12:00:00.123' };
    await client.insert({ table: 'feature_tile_batches', values: [other], format: 'JSONEachRow' });
    expect(await count('feature_tile_batches')).toBe(2);
  });

  it('keeps the data for a new client on the same dir, in this process and in another one', async () => {
    await open();
    await ensureOfflineSchema(client);
    await new OfflineSink(client).writeBatch('b1', { impressions: [impression(0)], clicks: [], tiles: [] });
    const database = `t${db}`;

    // A second client on the same dir in the same process works alongside the first, and after it closes.
    const second = await openClickHouse({ dir, database });
    await client.close();
    const n = await (await second.query({ query: 'SELECT count() AS n FROM impressions', format: 'JSON' })).json();
    expect(Number((n.data[0] as { n: string }).n)).toBe(1);

    // Another dir is refused while this one is open: one data directory per process.
    await expect(openClickHouse({ dir: join(dir, 'elsewhere') })).rejects.toThrow(ClickHouseUnavailableError);

    // Another process can't open the dir while this process holds it...
    const script = join(dir, 'count.mts');
    const module = resolve('src/offline/clickhouse.ts');
    writeFileSync(
      script,
      `import { openClickHouse } from ${JSON.stringify(module)};
try {
  const c = await openClickHouse({ dir: ${JSON.stringify(dir)}, database: ${JSON.stringify(database)} });
  const rs = await c.query({ query: 'SELECT count() AS n FROM impressions', format: 'JSON' });
  console.log('count', (await rs.json()).data[0].n);
  await c.close();
} catch (err) {
  console.log('error', err.message);
}
`,
    );
    const child = () => promisify(execFile)(process.execPath, ['--import', 'tsx', script], { timeout: 60_000 });
    expect((await child()).stdout).toMatch(/^error cannot open the embedded ClickHouse at .*one process can use/m);

    // ...and sees the data once this process has let go of it.
    await second.close();
    expect((await child()).stdout).toMatch(/^count 1$/m);
  }, 120_000);

  it('reports an unreachable server URL clearly', async () => {
    await expect(openClickHouse({ url: 'http://user:secret@127.0.0.1:1', dir })).rejects.toThrow(
      /^ClickHouse not reachable at URL: http:\/\/user:\*\*\*@127\.0\.0\.1:1 .*pass --clickhouse or unset it/,
    );
  });
});
