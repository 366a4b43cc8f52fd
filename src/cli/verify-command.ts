// `tributary verify`: the live parity check (backfill/live-parity.ts) beside a stream that records served vectors,
// and what `tributary stream --verify` uses to host the same check in the stream's own process.
import type { Server } from 'node:http';
import type { ClickHouseClient } from '@clickhouse/client';
import type { Command } from 'commander';
import type { Logger } from 'pino';
import { LiveParity, lastCheckedBatch } from '../backfill/live-parity.ts';
import { ParityMetrics } from '../backfill/parity-metrics.ts';
import { type Config, ConfigError } from '../config/config.ts';
import { FeatureSet } from '../features/compile.ts';
import { DEFAULT_GROUPS } from '../features/definitions.ts';
import { FileEventLog } from '../log/file-event-log.ts';
import { openClickHouse } from '../offline/clickhouse.ts';
import { ensureOfflineSchema } from '../offline/schema.ts';
import { connectValkey } from '../online/connect.ts';
import { type CheckpointStore, ValkeyCheckpoints } from '../streams/checkpoint.ts';
import type { EventLog } from '../streams/event-log.ts';
import { caughtUp, openEventLog } from '../streams/open.ts';
import { sourceTopics } from '../streams/processor.ts';
import { log } from './log.ts';
import { serveMetrics } from './metrics-server.ts';
import { durationOption } from './options.ts';

/** --sample / --verify-sample: a share in (0, 1]. */
export function sampleOption(flag: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !(n > 0 && n <= 1))
    throw new ConfigError(`${flag} must be a number above 0 and at most 1, got "${value}"`);
  return n;
}

/** How many partitions the source topics have (the replay drops old state once it has seen each). */
async function sourcePartitions(eventLog: EventLog, namespace: string): Promise<number> {
  const topics = Object.values(sourceTopics(namespace));
  return (await Promise.all(topics.map((t) => eventLog.endOffsets(t)))).reduce((n, parts) => n + parts.length, 0);
}

export interface LiveParityHost {
  parity: LiveParity;
  metrics: ParityMetrics;
}

/**
 * A live check of the stream of group `groupId`'s history in `ch`, on its checkpoints: resuming after the last
 * flushed position, or from the history's start when `fresh` (an embedded stream rebuilds its history on each
 * start, numbering its batches from 1 again).
 */
export async function openLiveParity(
  ch: ClickHouseClient,
  o: {
    config: Config;
    features: FeatureSet;
    eventLog: EventLog;
    checkpoints: CheckpointStore;
    allowedLatenessMs: number;
    sample: number;
    fresh: boolean;
    log: Logger;
  },
): Promise<LiveParityHost> {
  await ensureOfflineSchema(ch, { cluster: o.config.clickhouseCluster });
  const metrics = new ParityMetrics();
  const parity = new LiveParity(ch, {
    features: o.features,
    allowedLatenessMs: o.allowedLatenessMs,
    sample: o.sample,
    partitions: await sourcePartitions(o.eventLog, o.config.namespace),
    settled: () => o.checkpoints.settledThrough(),
    metrics,
    log: o.log,
  });
  const from = o.fresh ? 0 : await lastCheckedBatch(ch);
  parity.resumeAfter(from);
  o.log.info({ sample: o.sample, resume_after_batch: from }, 'live parity check started');
  return { parity, metrics };
}

export function registerVerifyCommand(program: Command, configOf: (cmd: Command) => Config): void {
  program
    .command('verify')
    .description(
      'live parity: recompute a sample of the served vectors from the log as the stream records them, and count mismatches',
    )
    .option('--follow', 'keep following the stream until stopped (default: check what is settled now, then exit)')
    .option('--until-caught-up', 'with --follow: stop once the stream has reached the log end and the check the stream')
    .option(
      '--group <id>',
      "the stream's consumer group (its checkpoints say which batches have settled)",
      'tributary-stream',
    )
    .option('--sample <rate>', 'share of impressions checked, chosen by event id (0 < rate <= 1)', '1')
    .option('--allowed-lateness <duration>', "the stream's lateness rule", '1h')
    .option('--interval <duration>', 'how often to look for newly settled batches', '1s')
    .option('--flush-every <duration>', 'how often counts are written to ClickHouse (parity_live)', '10s')
    .option('--metrics-port <port>', 'serve Prometheus metrics at http://HOST:PORT/metrics')
    .option('--metrics-host <host>', 'address the metrics listen on (0.0.0.0 for a scraper elsewhere)', '127.0.0.1')
    .addHelpText(
      'after',
      `
Needs a stream run with --record-served and its checkpoints in Valkey (--valkey). On the embedded defaults the
stream holds the embedded ClickHouse, so it hosts the check instead: tributary stream --record-served --verify.
Counts go to parity_live, each mismatching value to parity_mismatches (and the log); a restart resumes after the
last flushed batch. Exit code 1 when a mismatch was found.

Examples:
  tributary verify --follow --sample 0.1 --metrics-port 9465 \\
    --kafka 127.0.0.1:9092 --valkey redis://127.0.0.1:6379 --clickhouse http://127.0.0.1:8123
  tributary verify --valkey redis://127.0.0.1:6379 --clickhouse http://127.0.0.1:8123   # once, what has settled`,
    )
    .action(async (opts: Record<string, string | boolean | undefined>, cmd: Command) => {
      const config = configOf(cmd);
      if (!config.valkey)
        throw new ConfigError(
          'verify reads the stream checkpoints in Valkey: pass --valkey (on the embedded defaults run `tributary stream --record-served --verify` instead)',
        );
      if (opts.untilCaughtUp && !opts.follow) throw new ConfigError('--until-caught-up goes with --follow');
      const sample = sampleOption('--sample', String(opts.sample));
      const allowedLatenessMs = durationOption('--allowed-lateness', String(opts.allowedLateness));
      const intervalMs = durationOption('--interval', String(opts.interval));
      const flushMs = durationOption('--flush-every', String(opts.flushEvery));
      const features = new FeatureSet(DEFAULT_GROUPS);
      const valkey = await connectValkey(config.valkey, { maxRetriesPerRequest: 2 }, (err) =>
        log.warn({ err: err.message }, 'valkey connection error'),
      );
      const eventLog = openEventLog(config, log, 'tributary-verify');
      const ch = await openClickHouse({ url: config.clickhouse, dir: config.clickhouseDir });
      const checkpoints = new ValkeyCheckpoints(valkey, `${config.namespace}${opts.group}`);
      let server: Server | undefined;
      try {
        const { parity, metrics } = await openLiveParity(ch, {
          config,
          features,
          eventLog,
          checkpoints,
          allowedLatenessMs,
          sample,
          fresh: false,
          log,
        });
        server = await serveMetrics(metrics.registry, opts.metricsPort as string | undefined, String(opts.metricsHost));
        if (opts.follow) {
          const stop = new AbortController();
          const onSignal = () => stop.abort();
          process.once('SIGINT', onSignal);
          process.once('SIGTERM', onSignal);
          const topics = Object.values(sourceTopics(config.namespace));
          const done = opts.untilCaughtUp
            ? async () => (await caughtUp(eventLog, checkpoints, topics)) && (await parity.caughtUp())
            : undefined;
          await parity.follow({ intervalMs, flushMs, signal: stop.signal, done });
        } else {
          await parity.step();
          await parity.flush();
        }
        const { checked, missing, mismatches } = parity.totals;
        const byFeature = Object.fromEntries(
          features.names.flatMap((name, i) => (mismatches[i] ? [[name, mismatches[i]]] : [])),
        );
        const total = mismatches.reduce((a, b) => a + b, 0);
        process.stdout.write(
          `${JSON.stringify({ checked, missing, mismatches: total, by_feature: byFeature, last_batch_seq: parity.position })}\n`,
        );
        if (total > 0) {
          process.stderr.write(`tributary: ${total} served feature values differ from the log (per feature above)\n`);
          process.exitCode = 1;
        }
      } finally {
        server?.close();
        await ch.close();
        valkey.disconnect();
        if (eventLog instanceof FileEventLog) eventLog.log.close();
      }
    });
}
