// backfill --source clickhouse and parity read what `tributary stream` wrote to ClickHouse. Before any stream run
// there is nothing to read: say so and what to run, rather than ClickHouse's "Unknown table expression".
import type { ClickHouseClient } from '@clickhouse/client';
import type { Config } from '../config/config.ts';
import { ConfigError } from '../config/config.ts';

/** Impressions the stream has written to the offline store; an error (exit 2) saying what to run when none. */
export async function requireStreamHistory(ch: ClickHouseClient, config: Config, needs: string): Promise<number> {
  const where = config.clickhouse
    ? `ClickHouse at ${config.clickhouse}`
    : `the embedded ClickHouse at ${config.clickhouseDir}`;
  const run = `run \`tributary stream --until-caught-up${needs}\` first (with the same --clickhouse-dir/--clickhouse)`;
  const tables = await (
    await ch.query({
      query: "SELECT name FROM system.tables WHERE database = currentDatabase() AND name IN ('impressions', 'clicks')",
      format: 'JSONEachRow',
    })
  ).json<{ name: string }>();
  if (tables.length < 2) throw new ConfigError(`nothing has been streamed into ${where} yet: ${run}`);
  const [row] = await (await ch.query({ query: 'SELECT count() AS n FROM impressions', format: 'JSONEachRow' })).json<{
    n: string;
  }>();
  const impressions = Number(row?.n ?? 0);
  if (impressions === 0) throw new ConfigError(`no impressions have been streamed into ${where} yet: ${run}`);
  return impressions;
}
