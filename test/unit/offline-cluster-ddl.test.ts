// The offline schema's cluster variant (--clickhouse-cluster): Replicated local tables ON CLUSTER and Distributed
// tables under the names readers and writers use. No cluster, Keeper or ClickHouse server exists here, so the DDL is
// checked as text and parsed by the embedded engine's parser (formatQuery); executing it is refused by that engine
// (no remote_servers, no {shard}/{replica} macros, no Keeper), which the last test pins.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trainingDdl } from '../../src/backfill/training-clickhouse.ts';
import { ConfigError, loadConfig } from '../../src/config/config.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import { ensureOfflineSchema, offlineDdl } from '../../src/offline/schema.ts';

const dir = mkdtempSync(join(tmpdir(), 'offline-cluster-'));
let ch: ClickHouseClient;
beforeAll(async () => {
  ch = await openClickHouse({ dir });
});
afterAll(async () => {
  await ch?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The statement as the engine's parser formats it: throws on a syntax error. */
async function parsed(query: string): Promise<string> {
  const rs = await ch.query({
    query: 'SELECT formatQuery({q:String}) AS f',
    query_params: { q: query },
    format: 'JSONEachRow',
  });
  return ((await rs.json<{ f: string }>())[0] as { f: string }).f;
}

const TABLES = [
  'served_vectors',
  'impressions',
  'clicks',
  'feature_tile_batches',
  'parity_runs',
  'parity_live',
  'parity_mismatches',
];
const SHARD_KEYS: Record<string, string> = {
  served_vectors: 'cityHash64(topic, partition)',
  impressions: 'cityHash64(topic, partition)',
  clicks: 'cityHash64(topic, partition)',
  feature_tile_batches: 'cityHash64(entity)',
  parity_runs: 'rand()',
  parity_live: 'rand()',
  parity_mismatches: 'cityHash64(topic, partition)',
};

describe('offline DDL on a cluster', () => {
  const single = offlineDdl();
  const cluster = offlineDdl({ cluster: 'ads_cluster', database: 'tributary' });

  it('keeps one server plain: no replication, no Distributed, no ON CLUSTER', () => {
    expect(single).toHaveLength(TABLES.length + 1);
    expect(single.join('\n')).not.toMatch(/Replicated|Distributed|ON CLUSTER|_local/);
  });

  it('makes each table a Replicated local table and a Distributed table under its own name', async () => {
    expect(cluster).toHaveLength(2 * TABLES.length + 1);
    for (const [i, name] of TABLES.entries()) {
      const local = cluster[2 * i] as string;
      const distributed = cluster[2 * i + 1] as string;
      const plain = single[i] as string;
      expect(local).toMatch(new RegExp(`^CREATE TABLE IF NOT EXISTS ${name}_local ON CLUSTER ads_cluster \\(`));
      const engine = /ENGINE = (\w+)\n/.exec(plain)?.[1];
      expect(local).toContain(
        `ENGINE = Replicated${engine}('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')`,
      );
      expect(local).toContain('SETTINGS replicated_deduplication_window = 10000');
      // The same columns and keys as on one server.
      const body = (ddl: string) => ddl.slice(ddl.indexOf('('), ddl.indexOf('ENGINE'));
      const keys = (ddl: string) => ddl.split('\n').filter((l) => /^(PARTITION|ORDER) BY/.test(l));
      expect(body(local)).toBe(body(plain));
      expect(keys(local)).toEqual(keys(plain));
      expect(distributed).toBe(
        `CREATE TABLE IF NOT EXISTS ${name} ON CLUSTER ads_cluster AS ${name}_local\n` +
          `ENGINE = Distributed(ads_cluster, tributary, ${name}_local, ${SHARD_KEYS[name]})`,
      );
    }
    const view = cluster.at(-1) as string;
    expect(view).toMatch(/^CREATE OR REPLACE VIEW feature_tiles_current ON CLUSTER ads_cluster AS\n/);
    expect(view).toContain('FROM feature_tile_batches\n'); // the Distributed table: every shard
    for (const q of cluster) await parsed(q);
  });

  it('replicates the training tables on every node (one Keeper path for the cluster)', async () => {
    const catalog = trainingDdl.catalog('ads_cluster');
    const table = trainingDdl.table('train_rows', ['a', 'b'], 'ads_cluster');
    expect(catalog).toMatch(/^CREATE TABLE IF NOT EXISTS training_sets ON CLUSTER ads_cluster \(/);
    expect(catalog).toContain(
      "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}', written_at)",
    );
    expect(table).toMatch(/^CREATE TABLE IF NOT EXISTS `train_rows` ON CLUSTER ads_cluster \(/);
    expect(table).toContain("ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}')");
    expect(trainingDdl.catalog(undefined)).toContain('ENGINE = ReplacingMergeTree(written_at)\n');
    for (const q of [catalog, table]) await parsed(q);
  });

  it('refuses names that are not plain, and a cluster without a server', () => {
    expect(() => offlineDdl({ cluster: 'x; DROP', database: 'd' })).toThrow(/not a plain name/);
    const env = { TRIBUTARY_CLICKHOUSE: 'http://ch-1:8123', TRIBUTARY_CLICKHOUSE_CLUSTER: 'ads_cluster' };
    expect(loadConfig({}, env).clickhouseCluster).toBe('ads_cluster');
    expect(loadConfig({ clickhouseCluster: 'other' }, env).clickhouseCluster).toBe('other');
    expect(() => loadConfig({ clickhouseCluster: 'a-b' }, env)).toThrow(ConfigError);
    expect(() => loadConfig({}, { TRIBUTARY_CLICKHOUSE_CLUSTER: 'ads_cluster' })).toThrow(/needs a ClickHouse server/);
  });

  it('is not executable on the embedded engine: no cluster, no macros, no Keeper', async () => {
    await expect(ensureOfflineSchema(ch, { cluster: 'ads_cluster' })).rejects.toThrow(/cluster .*not found/i);
    await expect(ch.command({ query: cluster[0] as string })).rejects.toThrow(/cluster .*not found/i);
    const local = (cluster[0] as string).replace(' ON CLUSTER ads_cluster', '');
    await expect(ch.command({ query: local })).rejects.toThrow(/macro/i);
    const explicit = local.replace('{shard}/{database}/{table}', '1/t').replace('{replica}', 'r1');
    await expect(ch.command({ query: explicit })).rejects.toThrow(/ZooKeeper/i);
    const distributed = (cluster[1] as string)
      .replace(' ON CLUSTER ads_cluster', '')
      .replace(' AS served_vectors_local', ' (topic String, partition UInt32)');
    await expect(ch.command({ query: distributed })).rejects.toThrow(/cluster .*not found/i);
  });
});
