// `tributary stream`: the stream service on the configured log and stores (streams/open.ts), until stopped.
import type { Command } from 'commander';
import { type Config, ConfigError } from '../config/config.ts';
import { FeatureSet } from '../features/compile.ts';
import { DEFAULT_GROUPS } from '../features/definitions.ts';
import { openClickHouse } from '../offline/clickhouse.ts';
import { openStream } from '../streams/open.ts';
import { log } from './log.ts';
import { serveMetrics } from './metrics-server.ts';
import { durationOption } from './options.ts';
import { openLiveParity, sampleOption } from './verify-command.ts';

/** How long a stop may take before the process exits anyway. */
const STOP_SECONDS = 15;

export function registerStreamCommand(program: Command, configOf: (cmd: Command) => Config): void {
  program
    .command('stream')
    .description(
      'consume ad_impressions and ad_clicks into windowed features: online (Valkey or in process) and offline (ClickHouse)',
    )
    .option('--group <id>', 'consumer group id (run more instances with the same id to scale out)', 'tributary-stream')
    .option(
      '--allowed-lateness <duration>',
      'events older than the partition watermark by more go to dead letters',
      '1h',
    )
    .option(
      '--max-clock-skew <duration>',
      'events further ahead of their log timestamp go to dead letters (one bad clock must not move a watermark)',
      '10m',
    )
    .option('--max-batch <n>', 'most events processed and written per batch', '20000')
    .option(
      '--metrics-port <port>',
      "serve Prometheus metrics at http://HOST:PORT/metrics; lag, freshness and last commit cover all of the group's partitions, whichever instance holds them",
    )
    .option('--metrics-host <host>', 'address the metrics listen on (0.0.0.0 for a scraper elsewhere)', '127.0.0.1')
    .option('--no-offline', 'do not write ClickHouse')
    .option(
      '--no-online',
      'write only ClickHouse, as a second group beside one run with --no-offline (pass another --group): ClickHouse then never holds up the online features',
    )
    .option(
      '--record-served',
      'record the vector each impression would have been served (ClickHouse served_vectors; for `tributary parity`)',
    )
    .option(
      '--verify',
      'with --record-served: check served vectors against the log as they are recorded (live parity, as `tributary verify --follow`)',
    )
    .option('--verify-sample <rate>', 'share of impressions the live check compares, chosen by event id', '1')
    .option('--verify-flush <duration>', 'how often the live check writes its counts (ClickHouse parity_live)', '10s')
    .option(
      '--until-caught-up',
      'stop once every partition has been processed to the end of the log (and, with --verify, checked)',
    )
    .addHelpText(
      'after',
      `
With no --kafka and no --valkey it runs embedded: it reads the file log (--log-dir, default .data/log) and keeps
the online features in this process, rebuilding them (and the embedded ClickHouse tables) from the log's start.

Examples:
  tributary generate --days 1 && tributary stream --until-caught-up
  tributary stream --record-served --verify --verify-sample 0.1 --metrics-port 9464
  tributary stream --kafka 127.0.0.1:9092 --schema-registry http://127.0.0.1:8081/apis/ccompat/v7 \\
    --valkey redis://127.0.0.1:6379 --metrics-port 9464`,
    )
    .action(async (opts: Record<string, string | boolean>, cmd: Command) => {
      const config = configOf(cmd);
      if (config.kafka.length > 0 && !config.schemaRegistry)
        throw new ConfigError('stream from Kafka needs a Schema Registry: pass --schema-registry URL');
      const maxBatch = Number(opts.maxBatch);
      if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new ConfigError('--max-batch must be a positive integer');
      const allowedLatenessMs = durationOption('--allowed-lateness', String(opts.allowedLateness));
      const maxClockSkewMs = durationOption('--max-clock-skew', String(opts.maxClockSkew));
      const verify = opts.verify === true;
      if (verify && (opts.recordServed !== true || opts.offline === false))
        throw new ConfigError('--verify checks recorded served vectors: pass --record-served (and keep ClickHouse on)');
      const verifySample = sampleOption('--verify-sample', String(opts.verifySample));
      const verifyFlushMs = durationOption('--verify-flush', String(opts.verifyFlush));

      // Listening for stop signals before anything starts: one during start-up stops the stream once it is up.
      let signals = 0;
      let settled = false;
      let settle: (failure: Error | undefined) => void = () => {};
      const ended = new Promise<Error | undefined>((resolve) => {
        settle = (failure) => {
          settled = true;
          resolve(failure);
        };
      });
      const onSignal = (signal: NodeJS.Signals) => {
        // A second signal while stopping: the user wants out now.
        if (++signals > 1) process.exit(130);
        log.info({ signal }, 'stopping');
        settle(undefined);
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);

      const features = new FeatureSet(DEFAULT_GROUPS);
      const ch =
        opts.offline === false
          ? undefined
          : await openClickHouse({ url: config.clickhouse, dir: config.clickhouseDir });
      const stream = await openStream(config, {
        features,
        group: String(opts.group),
        allowedLatenessMs,
        maxClockSkewMs,
        maxBatch,
        offline: ch,
        recordServed: opts.recordServed === true,
        online: opts.online !== false,
        log,
      });
      const { metrics, service } = stream;
      // The embedded engine takes one process per data folder, so the check runs here, beside the stream.
      const live =
        verify && ch
          ? await openLiveParity(ch, {
              config,
              features,
              eventLog: stream.eventLog,
              checkpoints: stream.checkpoints,
              allowedLatenessMs,
              sample: verifySample,
              // Without Valkey the stream rebuilds its history from the log on each start, numbering batches anew.
              fresh: !config.valkey,
              log,
            })
          : undefined;
      const registries = live ? [metrics.registry, live.metrics.registry] : [metrics.registry];
      const server = await serveMetrics(
        registries,
        opts.metricsPort as string | undefined,
        String(opts.metricsHost),
      ).catch(async (err) => {
        await stream.close();
        await ch?.close();
        throw err;
      });

      await service.start();
      log.info(
        { from: stream.eventLog.where, features: features.names.length, version: features.version },
        'streaming',
      );
      void service.failed.then(settle);
      const stopChecking = new AbortController();
      const checking = live?.parity.follow({ intervalMs: 500, flushMs: verifyFlushMs, signal: stopChecking.signal });
      if (opts.untilCaughtUp) {
        const check = async () => {
          if (settled) return;
          try {
            if ((await stream.caughtUp()) && (!live || (await live.parity.caughtUp()))) return settle(undefined);
          } catch (err) {
            log.warn({ err: (err as Error).message }, 'could not check progress; trying again');
          }
          setTimeout(check, 200);
        };
        void check();
      }
      const failure = await ended;
      // The batch in hand returns at once (retries end on stop); a server that hangs up mid-write is given a bound.
      const deadline = setTimeout(() => {
        log.error({ seconds: STOP_SECONDS }, 'stop timed out; exiting');
        process.exit(1);
      }, STOP_SECONDS * 1000);
      deadline.unref();
      // The check ends first (its last step and flush read the stream's checkpoints, which close with it); a batch
      // the stream commits meanwhile is checked by the next run.
      stopChecking.abort();
      await checking?.catch((err: Error) => log.error({ err: err.message }, 'live parity: last flush failed'));
      await stream.close();
      server?.close();
      await ch?.close();
      clearTimeout(deadline);
      if (failure) {
        process.exitCode = 1;
        log.error(failure.message);
      }
      // After close: the last batch's counts are in.
      log.info({ processed: service.processed, ...service.counts }, 'stopped');
    });
}
