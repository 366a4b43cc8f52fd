// `tributary parity`: served (online) == backfill == SQL, for every impression the stream applied.
import type { Command } from 'commander';
import { checkParity, recordParityRun } from '../backfill/parity.ts';
import type { Config } from '../config/config.ts';
import { FeatureSet } from '../features/compile.ts';
import { DEFAULT_GROUPS } from '../features/definitions.ts';
import { openClickHouse } from '../offline/clickhouse.ts';
import { ensureOfflineSchema } from '../offline/schema.ts';
import { durationOption } from './options.ts';
import { requireStreamHistory } from './stream-history.ts';

export function registerParityCommand(program: Command, configOf: (cmd: Command) => Config): void {
  program
    .command('parity')
    .description('check that served vectors, the backfill and an independent SQL query agree on every feature')
    .option('--allowed-lateness <duration>', "the stream's lateness rule", '1h')
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      '\nNeeds the stream to have run with --record-served. Each run is kept in ClickHouse (parity_runs).\nExample:\n  tributary parity --clickhouse-dir .data/clickhouse',
    )
    .action(async (opts: { allowedLateness: string; json?: boolean }, cmd: Command) => {
      const config = configOf(cmd);
      const features = new FeatureSet(DEFAULT_GROUPS);
      const ch = await openClickHouse({ url: config.clickhouse, dir: config.clickhouseDir });
      try {
        await requireStreamHistory(ch, config, ' --record-served');
        const t0 = performance.now();
        const report = await checkParity(
          ch,
          features,
          DEFAULT_GROUPS,
          durationOption('--allowed-lateness', opts.allowedLateness),
        );
        const seconds = ((performance.now() - t0) / 1000).toFixed(1);
        // Kept for the console (parity_runs), whatever the result.
        await ensureOfflineSchema(ch, { cluster: config.clickhouseCluster });
        await recordParityRun(ch, report);
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        } else {
          const w = Math.max(...report.features.map((f) => f.name.length));
          process.stdout.write(`${'feature'.padEnd(w)}  served≠backfill  sql≠backfill  example\n`);
          for (const f of report.features) {
            const ex = f.example ? JSON.stringify(f.example) : '';
            process.stdout.write(
              `${f.name.padEnd(w)}  ${String(f.servedMismatches).padStart(15)}  ${String(f.sqlMismatches).padStart(12)}  ${ex}\n`,
            );
          }
          process.stdout.write(
            `impressions ${report.impressions}, missing served ${report.missingServed}, missing sql ${report.missingSql}, mismatches ${report.mismatches} (${seconds}s)\n`,
          );
        }
        // The counts alone do not say why the exit code is 1.
        if (report.missingServed > 0)
          process.stderr.write(
            `tributary: ${report.missingServed} of ${report.impressions} impressions have no served vector: stream with --record-served (from the log's start, into an empty store) to record them\n`,
          );
        if (report.mismatches > report.missingServed)
          process.stderr.write(
            `tributary: ${report.mismatches - report.missingServed} mismatches: the features disagree (per feature above)\n`,
          );
        if (report.impressions === 0)
          process.stderr.write('tributary: no impression was admitted (all late or duplicate): nothing to compare\n');
        if (report.mismatches > 0 || report.impressions === 0) process.exitCode = 1;
      } finally {
        await ch.close();
      }
    });
}
