// `tributary backfill`: point-in-time training sets from history, through the same feature definitions.

import { createHash } from 'node:crypto';
import type { ClickHouseClient } from '@clickhouse/client';
import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { KafkaSource } from '../backfill/kafka-source.ts';
import type { ReplayRecord } from '../backfill/replay.ts';
import { runBackfill } from '../backfill/run.ts';
import { fromClickHouse, fromEventFile, partitionsIn } from '../backfill/sources.ts';
import { isPlainTableName, parquetConverter, writeTrainingTable } from '../backfill/training-clickhouse.ts';
import { ConvertingTrainingWriter, type TrainingFormat, type TrainingMeta } from '../backfill/training-set.ts';
import { type Config, ConfigError } from '../config/config.ts';
import { createRegistryClient } from '../events/registry.ts';
import { EventSerde } from '../events/serde.ts';
import { FeatureSet } from '../features/compile.ts';
import { DEFAULT_GROUPS } from '../features/definitions.ts';
import { createKafka } from '../kafka/client.ts';
import { openClickHouse } from '../offline/clickhouse.ts';
import { log } from './log.ts';
import { durationOption } from './options.ts';
import { requireStreamHistory } from './stream-history.ts';

export function parseTime(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new ConfigError(`${flag} "${v}" is not a time (use ISO-8601, e.g. 2026-11-02T00:00:00Z)`);
  return t;
}

/** The same source, range and definitions name the same run, so a rerun replaces its rows in the table. */
function defaultRunId(source: string, from: string | undefined, to: string | undefined, m: TrainingMeta): string {
  const params = [source, from, to, m.features, m.attribution_ms, m.allowed_lateness_ms, m.definitions_version];
  return createHash('sha256').update(JSON.stringify(params)).digest('hex').slice(0, 16);
}

export function positiveInt(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new ConfigError(`${flag} must be a positive whole number, got "${v}"`);
  return n;
}

export interface BackfillSource {
  open: () => AsyncIterable<ReplayRecord>;
  /** How many partitions the source holds, when known. */
  partitions?: number;
  kafkaSource?: KafkaSource;
}

/** Opens `--source` (clickhouse, kafka or file:PATH) for the backfill: `backfill` and `retrain` share it. */
export async function backfillSource(
  config: Config,
  src: string,
  maxClockSkewMs: number,
  clickhouse: () => Promise<ClickHouseClient>,
): Promise<BackfillSource> {
  if (src.startsWith('file:')) {
    const path = src.slice(5);
    return { open: () => fromEventFile(path), partitions: 2 }; // one partition per event kind
  }
  if (src === 'clickhouse') {
    const client = await clickhouse();
    await requireStreamHistory(client, config, '');
    return { open: () => fromClickHouse(client), partitions: await partitionsIn(client) };
  }
  if (src === 'kafka') {
    if (config.kafka.length === 0) throw new ConfigError('--source kafka needs Kafka: pass --kafka host:port');
    if (!config.schemaRegistry)
      throw new ConfigError('--source kafka needs a Schema Registry: pass --schema-registry URL');
    const source = new KafkaSource({
      kafka: createKafka(config.kafka),
      brokers: config.kafka,
      serde: new EventSerde(createRegistryClient(config.schemaRegistry)),
      namespace: config.namespace,
      maxClockSkewMs,
    });
    return { open: () => source.open(), kafkaSource: source };
  }
  throw new ConfigError(`--source must be clickhouse, kafka or file:PATH, got "${src}"`);
}

export function registerBackfillCommand(program: Command, configOf: (cmd: Command) => Config): void {
  program
    .command('backfill')
    .description('replay history through the feature definitions into a point-in-time training set (CSV + metadata)')
    .option(
      '--source <src>',
      "clickhouse (the stream's offline store, in its apply order), kafka (the topics from their earliest offsets) or file:PATH (an event-log NDJSON, or a column file: the fastest)",
      'clickhouse',
    )
    .option(
      '--out <file>',
      'training set file; the feature list and definitions version go to FILE.meta.json',
      'training.csv',
    )
    .option('--format <fmt>', 'csv or parquet (default: from the --out extension)')
    .option('--table <name>', 'also write the rows to this ClickHouse table (one partition per run; see training_sets)')
    .option('--run-id <id>', "the table partition a rerun replaces (default: a hash of the run's parameters)")
    .option('--attribution <duration>', 'a click within this long after the impression makes it positive', '1h')
    .option('--allowed-lateness <duration>', "the stream's lateness rule (must match the stream's)", '1h')
    .option(
      '--max-clock-skew <duration>',
      "the stream's clock-skew rule, for --source kafka (must match the stream's)",
      '10m',
    )
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
      '\nExamples:\n  tributary backfill --source file:events.ndjson --out train.csv\n  tributary backfill --source clickhouse --attribution 30m --from 2026-11-02T00:00:00Z\n  tributary backfill --source kafka --out train.parquet --table training_rows',
    )
    .action(async (opts: Record<string, string>, cmd: Command) => {
      const config = configOf(cmd);
      const features = new FeatureSet(DEFAULT_GROUPS);
      const attributionMs = durationOption('--attribution', opts.attribution as string);
      const allowedLatenessMs = durationOption('--allowed-lateness', opts.allowedLateness as string);
      const src = opts.source as string;
      const out = opts.out as string;
      const format = (opts.format ?? (/\.parquet$/i.test(out) ? 'parquet' : 'csv')) as TrainingFormat;
      if (format !== 'csv' && format !== 'parquet')
        throw new ConfigError(`--format must be csv or parquet, got "${format}"`);
      const table = opts.table as string | undefined;
      if (table && !isPlainTableName(table))
        throw new ConfigError(`--table "${table}" is not a plain table name (letters, digits, _)`);
      let ch: ClickHouseClient | undefined;
      const clickhouse = async () => {
        ch ??= await openClickHouse({ url: config.clickhouse, dir: config.clickhouseDir });
        return ch;
      };
      const { open, partitions, kafkaSource } = await backfillSource(
        config,
        src,
        durationOption('--max-clock-skew', opts.maxClockSkew as string),
        clickhouse,
      );
      const converter = format === 'parquet' ? parquetConverter(await clickhouse()) : undefined;
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
          out,
          writer: converter && ((columns) => new ConvertingTrainingWriter(out, columns, converter)),
          attributionMs,
          allowedLatenessMs,
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
        let runId: string | undefined;
        if (table) {
          runId = (opts.runId as string | undefined) ?? defaultRunId(src, opts.from, opts.to, meta);
          await writeTrainingTable(await clickhouse(), {
            table,
            runId,
            file: out,
            format,
            meta,
            cluster: config.clickhouseCluster,
          });
        }
        const seconds = (performance.now() - t0) / 1000;
        const bad = kafkaSource?.bad ?? [];
        for (const b of bad.slice(0, 10)) log.warn(b, 'skipped a record that cannot be decoded');
        log.info(
          {
            ...meta,
            features: meta.features.length,
            out,
            format,
            table,
            run_id: runId,
            ...(kafkaSource && { kafka_records: kafkaSource.read, undecodable: bad.length }),
            seconds: +seconds.toFixed(2),
          },
          'backfill done',
        );
      } finally {
        bar?.stop();
        await ch?.close();
      }
    });
}
