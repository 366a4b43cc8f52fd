// `tributary sql`: a query on the offline store, the embedded engine or a server alike, so analysts can run the
// README's queries (and their own) on the default setup, which has no clickhouse-client to point at.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { type Config, ConfigError } from '../config/config.ts';
import { openClickHouse } from '../offline/clickhouse.ts';

const FORMATS = ['TabSeparatedWithNames', 'CSVWithNames', 'JSONEachRow'] as const;
type Format = (typeof FORMATS)[number];

/** `name=value` pairs of repeated --param flags, as ClickHouse query parameters ({name:Type} in the query). */
function params(pairs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const at = p.indexOf('=');
    if (at < 1) throw new ConfigError(`--param "${p}" is not name=value`);
    out[p.slice(0, at)] = p.slice(at + 1);
  }
  return out;
}

export function registerSqlCommand(program: Command, configOf: (cmd: Command) => Config): void {
  program
    .command('sql')
    .description('run a ClickHouse query on the offline store (embedded or --clickhouse) and print the rows')
    .argument('[query]', 'the query (or --file)')
    .option('--file <path>', 'read the query from this file')
    .option(
      '--param <name=value>',
      'a query parameter, used in the query as {name:Type}; repeatable',
      (v: string, all: string[]) => [...all, v],
      [] as string[],
    )
    .option('--format <fmt>', `output format: ${FORMATS.join(', ')}`, 'TabSeparatedWithNames')
    .addHelpText(
      'after',
      `
The tables and example queries: README, "Analysts: the ClickHouse tables".
Examples:
  tributary sql "SELECT verdict, count() FROM impressions FINAL GROUP BY verdict"
  tributary sql --file ctr.sql --format CSVWithNames > ctr.csv
  tributary sql --param ad=ad-3 "SELECT count() FROM impressions FINAL WHERE ad_id = {ad:String}"`,
    )
    .action(async (query: string | undefined, opts: { file?: string; param: string[]; format: string }, cmd) => {
      const config = configOf(cmd);
      if ((query === undefined) === (opts.file === undefined))
        throw new ConfigError('give the query either as an argument or with --file');
      if (!(FORMATS as readonly string[]).includes(opts.format))
        throw new ConfigError(`--format must be one of ${FORMATS.join(', ')}, got "${opts.format}"`);
      let text = query;
      if (opts.file !== undefined) {
        try {
          text = readFileSync(opts.file, 'utf8');
        } catch (err) {
          throw new ConfigError(`--file ${opts.file}: ${(err as Error).message}`);
        }
      }
      const query_params = params(opts.param);
      // `| head` closing the pipe ends the output, not with a stack trace.
      process.stdout.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'EPIPE') process.exit(0);
        throw err;
      });
      const ch = await openClickHouse({ url: config.clickhouse, dir: config.clickhouseDir });
      try {
        const rs = await ch.query({ query: text as string, format: opts.format as Format, query_params });
        for await (const rows of rs.stream()) for (const row of rows) process.stdout.write(`${row.text}\n`);
      } catch (err) {
        // The query is the user's input: ClickHouse's reason (syntax, unknown column, a missing {param}) is a usage
        // error, exit 2 in one line. By class name (its `name` is plain "Error"): the embedded engine's errors come
        // from its own copy of the client, so instanceof can miss.
        if ((err as Error).constructor?.name === 'ClickHouseError')
          throw new ConfigError(`the query failed: ${(err as Error).message.trim().split('\n')[0]}`);
        throw err;
      } finally {
        await ch.close();
      }
    });
}
