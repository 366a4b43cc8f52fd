// generate, produce, schemas: getting events into the log.
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import { type Config, ConfigError } from '../config/config.ts';
import { allTopics, KINDS } from '../events/catalog.ts';
import { writeEventFile } from '../events/event-file.ts';
import { DEFAULT_GENERATOR_OPTIONS, type GeneratorOptions, generate } from '../events/generator.ts';
import { loadMapping } from '../events/mapping.ts';
import { createRegistryClient, registerAll } from '../events/registry.ts';
import { formatOf, readRows } from '../events/rows.ts';
import { EventPublisher, inEventTimeOrder, type Outgoing } from '../kafka/publish.ts';
import { openEventLog, openSerde } from '../streams/open.ts';
import { log } from './log.ts';
import { shareOption, timeOption, wholeOption } from './options.ts';

type ConfigOf = (cmd: Command) => Config;

/** Publishes to Kafka when configured, else appends to the file log; returns how many events went out. */
export async function publishAll(
  config: Config,
  records: AsyncIterable<Outgoing> | Iterable<Outgoing>,
  logger: Logger = log,
): Promise<number> {
  if (config.kafka.length > 0 && !config.schemaRegistry) {
    throw new ConfigError('publishing to Kafka needs a Schema Registry: pass --schema-registry URL');
  }
  const serde = await openSerde(config);
  const eventLog = openEventLog(config, logger);
  await eventLog.ensureTopics(allTopics(config.namespace), config.partitions);
  const producer = eventLog.producer();
  await producer.connect();
  const publisher = new EventPublisher(producer, serde, config.namespace);
  try {
    for await (const r of records) await publisher.add(r);
    await publisher.flush();
  } finally {
    await producer.disconnect();
  }
  logger.info({ events: publisher.published, to: eventLog.where }, 'published');
  return publisher.published;
}

export function registerEventCommands(program: Command, configOf: ConfigOf): void {
  const d = DEFAULT_GENERATOR_OPTIONS;
  program
    .command('generate')
    .description(
      'generate seeded, realistic ad traffic (impressions, clicks, requests) into the event log (Kafka or the file log) or an NDJSON file',
    )
    .option('--seed <n>', 'random seed: same seed, same events', String(d.seed))
    .option('--days <n>', 'days of traffic', String(d.days))
    .option('--impressions-per-day <n>', 'impressions per day', String(d.impressionsPerDay))
    .option('--start <iso>', 'first day (UTC)', new Date(d.start).toISOString())
    .option('--late-share <x>', 'share of events delivered minutes to hours late', String(d.lateShare))
    .option('--duplicate-share <x>', 'share of events sent twice', String(d.duplicateShare))
    .option('--candidates <n>', 'emit an AdRequest per impression with this many candidates (0 = none)', '0')
    .option(
      '--out <file>',
      "write NDJSON to this file instead of the event log (FILE.cols: the backfill's binary column file, no requests)",
    )
    .addHelpText(
      'after',
      '\nExamples:\n  tributary generate --days 1                      # into the file log (.data/log)\n  tributary generate --days 1 --out events.ndjson\n  tributary generate --days 1 --out events.cols    # for tributary backfill --source file:events.cols\n  tributary generate --kafka localhost:9092 --schema-registry http://localhost:8081/apis/ccompat/v7',
    )
    .action(async (opts: Record<string, string>, cmd: Command) => {
      const options: Partial<GeneratorOptions> = {
        seed: wholeOption('--seed', opts.seed as string, 0),
        days: wholeOption('--days', opts.days as string, 1),
        impressionsPerDay: wholeOption('--impressions-per-day', opts.impressionsPerDay as string, 1),
        start: timeOption('--start', opts.start as string),
        lateShare: shareOption('--late-share', opts.lateShare as string),
        duplicateShare: shareOption('--duplicate-share', opts.duplicateShare as string),
        candidatesPerRequest: wholeOption('--candidates', opts.candidates as string, 0),
      };
      const t0 = performance.now();
      const records = generate(options);
      const n = opts.out ? await writeEventFile(opts.out, records) : await publishAll(configOf(cmd), records);
      const secs = (performance.now() - t0) / 1000;
      log.info({ events: n, seconds: +secs.toFixed(2), ...(opts.out ? { to: opts.out } : {}) }, 'generated');
    });

  program
    .command('produce')
    .description(
      'publish events from a CSV or NDJSON file into the event log (Kafka or the file log), mapped onto the schemas; bad rows are reported by line',
    )
    .requiredOption('--file <path>', 'CSV or NDJSON file')
    .option('--format <fmt>', 'csv or ndjson (default: from the file name)')
    .option(
      '--mapping <preset|file>',
      'column mapping: a preset name (talkingdata) or a JSON mapping file',
      'talkingdata',
    )
    .option('--max-errors <n>', 'stop after this many bad rows', '1000')
    .option(
      '--sort-by-time',
      'publish events in event-time order (holds every event in memory first: ≈ 0.4 KB per TalkingData event); without it, rows go out in file order and events behind the watermark are dead-lettered as late',
    )
    .addHelpText(
      'after',
      '\nExamples:\n  tributary produce --file train_sample.csv --mapping talkingdata --sort-by-time   # TalkingData (Kaggle), not in the clone\n  tributary produce --file sample.csv --mapping talkingdata --sort-by-time --kafka 127.0.0.1:9092 --schema-registry http://127.0.0.1:8081/apis/ccompat/v7',
    )
    .action(async (opts: Record<string, string>, cmd: Command) => {
      const config = configOf(cmd);
      const file = opts.file as string;
      if (!statSync(file, { throwIfNoEntry: false })?.isFile()) {
        const hint =
          opts.mapping === 'talkingdata'
            ? ": the TalkingData sample is not part of the clone (Kaggle's TalkingData AdTracking Fraud Detection, train_sample.csv); download it and pass its path"
            : ': pass the path of a CSV or NDJSON file';
        throw new ConfigError(`--file ${file}: no such file (looked at ${resolve(file)})${hint}`);
      }
      const mapping = loadMapping(opts.mapping as string);
      const format = (opts.format as 'csv' | 'ndjson' | undefined) ?? formatOf(opts.file as string);
      const maxErrors = Number(opts.maxErrors);
      let rows = 0;
      let bad = 0;
      async function* events(): AsyncGenerator<Outgoing> {
        for await (const r of readRows(opts.file as string, mapping, format)) {
          rows++;
          if ('error' in r) {
            bad++;
            process.stderr.write(`${opts.file}:${r.line}: ${r.error}\n`);
            if (bad >= maxErrors) throw new Error(`stopped after ${bad} bad rows (--max-errors)`);
            continue;
          }
          for (const record of r.events) yield { record };
        }
      }
      const published = await publishAll(config, opts.sortByTime ? await inEventTimeOrder(events()) : events());
      process.stdout.write(`${JSON.stringify({ rows, published, bad_rows: bad })}\n`);
      if (bad > 0) process.exitCode = 1;
    });

  program
    .command('schemas')
    .description('register the Avro schemas in schemas/ (BACKWARD compatibility enforced)')
    .addHelpText(
      'after',
      '\nExample:\n  tributary schemas --schema-registry http://127.0.0.1:8081/apis/ccompat/v7   # prints subject and schema id',
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const config = configOf(cmd);
      const ids = await registerAll(createRegistryClient(config.schemaRegistry));
      for (const [kind, id] of ids) process.stdout.write(`${KINDS[kind].topic}-value\t${id}\n`);
    });
}
