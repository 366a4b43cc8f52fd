// `tributary backfill`: point-in-time training sets from history, through the same feature definitions.

import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import type { ReplayRecord } from '../backfill/replay.ts';
import { runBackfill } from '../backfill/run.ts';
import { fromClickHouse, fromEventFile, partitionsIn } from '../backfill/sources.ts';
import { type Config, ConfigError } from '../config/config.ts';
import { FeatureSet } from '../features/compile.ts';
import { DEFAULT_GROUPS } from '../features/definitions.ts';
import { parseDuration } from '../features/time.ts';
import { openClickHouse } from '../offline/clickhouse.ts';
import { log } from './log.ts';

function parseTime(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new ConfigError(`${flag} "${v}" is not a time (use ISO-8601, e.g. 2026-11-02T00:00:00Z)`);
  return t;
}

function positiveInt(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new ConfigError(`${flag} must be a positive whole number, got "${v}"`);
  return n;
}

export function registerBackfillCommand(program: Command, configOf: (cmd: Command) => Config): void {
  program
    .command('backfill')
    .description('replay history through the feature definitions into a point-in-time training set (CSV + metadata)')
    .option(
      '--source <src>',
      "clickhouse (the stream's offline store) or file:PATH (an event-log NDJSON)",
      'clickhouse',
    )
    .option(
      '--out <file>',
      'training set CSV; the feature list and definitions version go to FILE.meta.json',
      'training.csv',
    )
    .option('--attribution <duration>', 'a click within this long after the impression makes it positive', '1h')
    .option('--allowed-lateness <duration>', "the stream's lateness rule (must match the stream's)", '1h')
    .option('--from <iso>', 'first impression time to emit')
    .option('--to <iso>', 'emit impressions before this time')
    .option('--features <names>', 'comma-separated subset of features (default: all)')
    .option(
      '--checkpoint-every <events>',
      'records between checkpoints (OUT.checkpoint.json); rerunning an interrupted backfill resumes from the last',
      '1000000',
    )
    .addHelpText(
      'after',
      '\nExamples:\n  tributary backfill --source file:events.ndjson --out train.csv\n  tributary backfill --source clickhouse --attribution 30m --from 2026-11-02T00:00:00Z',
    )
    .action(async (opts: Record<string, string>, cmd: Command) => {
      const config = configOf(cmd);
      const features = new FeatureSet(DEFAULT_GROUPS);
      const src = opts.source as string;
      let open: () => AsyncIterable<ReplayRecord>;
      let close = async () => {};
      let partitions: number | undefined;
      if (src.startsWith('file:')) {
        const path = src.slice(5);
        open = () => fromEventFile(path);
        partitions = 1;
      } else if (src === 'clickhouse') {
        const ch = await openClickHouse({ url: config.clickhouse, dir: config.clickhouseDir });
        open = () => fromClickHouse(ch);
        partitions = await partitionsIn(ch);
        close = () => ch.close();
      } else {
        throw new ConfigError(`--source must be clickhouse or file:PATH, got "${src}"`);
      }
      const bar = process.stderr.isTTY
        ? new SingleBar({ format: 'replay {bar} {value} events | {rate}/s | {duration}s' })
        : undefined;
      const t0 = performance.now();
      bar?.start(0, 0, { rate: 0 });
      try {
        const meta = await runBackfill({
          features,
          open,
          sourceName: src,
          out: opts.out as string,
          attributionMs: parseDuration(opts.attribution as string),
          allowedLatenessMs: parseDuration(opts.allowedLateness as string),
          from: parseTime('--from', opts.from),
          to: parseTime('--to', opts.to),
          only: opts.features?.split(',').map((s) => s.trim()),
          partitions,
          checkpointEvery: positiveInt('--checkpoint-every', opts.checkpointEvery as string),
          onResume: (events) => log.info({ events }, 'resuming from the last checkpoint'),
          onProgress: (events) => {
            const rate = Math.round(events / ((performance.now() - t0) / 1000));
            if (bar) {
              bar.setTotal(Math.max(events, bar.getTotal()));
              bar.update(events, { rate });
            } else log.info({ events, rate }, 'replaying');
          },
        });
        bar?.stop();
        const seconds = (performance.now() - t0) / 1000;
        log.info(
          { ...meta, features: meta.features.length, out: opts.out, seconds: +seconds.toFixed(2) },
          'backfill done',
        );
      } finally {
        bar?.stop();
        await close();
      }
    });
}
