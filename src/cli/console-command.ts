// `tributary console`: the web console (src/console) over the configured log and stores, the model registry and
// the scraped /metrics of serve, stream and verify processes. Its stack is loaded by the action only.
import type { ClickHouseClient } from '@clickhouse/client';
import type { Command } from 'commander';
import { type Config, ConfigError } from '../config/config.ts';

const EMBEDDED_STATE =
  'the embedded stream keeps its checkpoints and online store in its own process: `npm start` (tributary demo) serves this console itself; with --valkey they are read from Valkey';

export function registerConsoleCommand(program: Command, configOf: (cmd: Command) => Config): void {
  program
    .command('console')
    .description('web console: pipeline, features, parity, models and serving, over the configured servers')
    .option('--port <port>', 'port to listen on (0 = any free port)', '8090')
    .option('--host <host>', 'address to listen on (0.0.0.0 to be reached from elsewhere)', '127.0.0.1')
    .option(
      '--scrape <url...>',
      'the /metrics of tributary serve, stream and verify processes, e.g. http://127.0.0.1:9464/metrics',
    )
    .option('--group <id>', 'the stream consumer group whose progress the Pipeline page shows', 'tributary-stream')
    .option(
      '--token <token>',
      'scoring token: promote and roll back need it (read-only without) [env TRIBUTARY_SCORING_TOKEN]',
    )
    .option('--interval <ms>', 'sampling period of the progress and metrics', '2000')
    .addHelpText(
      'after',
      `
The pages poll a JSON API (/api/...). Without a scoring token the console is read-only.

Examples:
  npm start                                   # the demo serves the console beside /v1/rank
  tributary console --kafka 127.0.0.1:9092 --valkey redis://127.0.0.1:6379 --clickhouse http://127.0.0.1:8123 \\
    --scrape http://127.0.0.1:8080/metrics http://127.0.0.1:9464/metrics --token "$TRIBUTARY_SCORING_TOKEN"
  tributary console --models .data/models --port 0`,
    )
    .action(async (opts: { port: string; host: string; scrape?: string[]; group: string; interval: string }, cmd) => {
      const config = configOf(cmd);
      const port = Number(opts.port);
      const intervalMs = Number(opts.interval);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError('--port must be 0..65535');
      if (!Number.isInteger(intervalMs) || intervalMs < 200)
        throw new ConfigError('--interval must be at least 200 (ms)');
      for (const url of opts.scrape ?? [])
        if (!/^https?:\/\/[^/]+/.test(url)) throw new ConfigError(`--scrape "${url}" is not an http(s) URL`);

      const [
        { scrapeSource },
        { startConsole },
        { FeatureSet },
        { DEFAULT_GROUPS },
        { openModelRegistry },
        { openClickHouse },
        { connectValkey },
        { ValkeyStore },
        { ValkeyCheckpoints },
        { openEventLog },
        { sourceTopics },
        { partitionProgress },
        { DeadLetterWatch },
        { log },
      ] = await Promise.all([
        import('../console/metrics-source.ts'),
        import('../console/start.ts'),
        import('../features/compile.ts'),
        import('../features/definitions.ts'),
        import('../model/mlflow.ts'),
        import('../offline/clickhouse.ts'),
        import('../online/connect.ts'),
        import('../online/valkey-store.ts'),
        import('../streams/checkpoint.ts'),
        import('../streams/open.ts'),
        import('../streams/processor.ts'),
        import('../streams/progress.ts'),
        import('../console/dead-letters.ts'),
        import('./log.ts'),
      ]);
      const features = new FeatureSet(DEFAULT_GROUPS);
      const eventLog = openEventLog(config, log, 'tributary-console');
      const topics = Object.values(sourceTopics(config.namespace));
      let valkey: Awaited<ReturnType<typeof connectValkey>> | undefined;
      let offline: ClickHouseClient | undefined;
      let offlineProblem: string | undefined;
      try {
        offline = await openClickHouse({ url: config.clickhouse, dir: config.clickhouseDir });
      } catch (err) {
        offlineProblem = `the offline store could not be opened: ${(err as Error).message.split('\n', 1)[0]}`;
      }
      if (config.valkey)
        valkey = await connectValkey(config.valkey, { enableAutoPipelining: true, maxRetriesPerRequest: 1 });
      const checkpoints = valkey && new ValkeyCheckpoints(valkey, `${config.namespace}${opts.group}`);
      const online =
        valkey &&
        new ValkeyStore(valkey, {
          features,
          namespace: config.namespace,
          ttlSeconds: 0,
          retentionMs: features.retentionMs,
        });
      const letters = new DeadLetterWatch(eventLog, config.namespace);
      const running = await startConsole(
        {
          features,
          registry: await openModelRegistry(config),
          offline,
          offlineProblem,
          online,
          onlineProblem: online ? undefined : EMBEDDED_STATE,
          deadLetters: () => letters.summary(),
          about: {
            mode: config.kafka.length ? 'servers' : 'file log',
            namespace: config.namespace,
            sources: (opts.scrape ?? []).map((u) => scrapeSource(u).name),
          },
          log,
        },
        {
          progress: checkpoints ? () => partitionProgress(eventLog, checkpoints, topics) : undefined,
          noProgress: EMBEDDED_STATE,
          metrics: (opts.scrape ?? []).map((u) => scrapeSource(u)),
        },
        { port, host: opts.host, token: config.scoringToken, intervalMs },
      );
      process.stdout.write(`console at ${running.url} (Ctrl-C to stop)\n`);
      await new Promise<void>((done) => {
        process.once('SIGINT', done);
        process.once('SIGTERM', done);
      });
      await running.close();
      valkey?.disconnect();
      await offline?.close();
    });
}
