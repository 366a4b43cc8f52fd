// `tributary serve` and `tributary score`: one scoring stack wired to the servers (loaded by the commands' actions
// only; scoring-commands.ts registers them).
import { join, parse } from 'node:path';
import { type Config, ConfigError } from '../config/config.ts';
import { allTopics } from '../events/catalog.ts';
import { FeatureSet } from '../features/compile.ts';
import { DEFAULT_GROUPS } from '../features/definitions.ts';
import { ModelRegistry } from '../model/registry.ts';
import { rankingClient } from '../online/connect.ts';
import { sharedEntityCache } from '../online/read-cache.ts';
import { ValkeyStore } from '../online/valkey-store.ts';
import { ScoreConsumer } from '../scoring/consumer.ts';
import { ScoringMetrics } from '../scoring/metrics.ts';
import { ModelRuntime } from '../scoring/model-runtime.ts';
import { Ranker } from '../scoring/ranker.ts';
import { ServedLog } from '../scoring/served-log.ts';
import { buildServer } from '../scoring/server.ts';
import { clusterMetrics, isWorker, leaveCluster, runPrimary, workerNumber } from '../scoring/workers.ts';
import { openEventLog, openSerde } from '../streams/open.ts';
import { log } from './log.ts';
import { serveMetrics } from './metrics-server.ts';

function requireValkey(config: Config): string {
  if (!config.valkey)
    throw new ConfigError('scoring needs Valkey for online features: pass --valkey redis://host:port');
  return config.valkey;
}

/** The ranker over Valkey (a node or a cluster) and the registry's current model; `close` releases what it opened. */
export async function openScoring(config: Config, servedLogPath?: string) {
  const valkeyUrl = requireValkey(config);
  const features = new FeatureSet(DEFAULT_GROUPS);
  const valkey = await rankingClient(valkeyUrl);
  valkey.on('error', (err) => log.warn({ err: err.message }, 'valkey connection error'));
  const cache = config.readCache ? sharedEntityCache(features, valkey, log) : undefined;
  // Scoring only reads: the TTL and retention options concern writes.
  const store = new ValkeyStore(valkey, {
    features,
    namespace: config.namespace,
    ttlSeconds: 0,
    retentionMs: 0,
    cache,
  });
  const metrics = new ScoringMetrics();
  metrics.cacheStats = cache?.tracked.stats;
  const models = new ModelRuntime(new ModelRegistry(config.modelsDir), features, metrics, log);
  await models.start();
  const served = servedLogPath
    ? new ServedLog({ path: servedLogPath, sampleRate: config.servedSampleRate }, log)
    : undefined;
  const ranker = new Ranker(
    { features, reader: store, models, metrics, log, served },
    { readTimeoutMs: config.rankTimeoutMs },
  );
  return {
    ranker,
    models,
    metrics,
    valkey,
    async close() {
      await served?.close();
      await models.stop();
      cache?.tracked.close();
      valkey.disconnect();
    },
  };
}

/** FILE.ndjson → FILE.<worker>.ndjson: workers never append to one file (a long write could interleave). */
function perWorker(path: string): string {
  const { dir, name, ext } = parse(path);
  return join(dir, `${name}.${workerNumber()}${ext}`);
}

function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
    if (isWorker()) process.once('disconnect', () => resolve()); // the primary is gone
  });
}

/** `serve`: validates its flags, then serves (or starts the workers that do) until SIGINT/SIGTERM. */
export async function runServe(config: Config, opts: Record<string, string>): Promise<void> {
  const port = Number(opts.port);
  const bodyLimit = Number(opts.bodyLimit);
  const workers = Number(opts.workers);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError('--port must be 0..65535');
  if (!Number.isInteger(bodyLimit) || bodyLimit < 1) throw new ConfigError('--body-limit must be a positive integer');
  if (!Number.isInteger(workers) || workers < 1) throw new ConfigError('--workers must be a positive integer');
  requireValkey(config); // checked before any worker starts
  if (workers > 1 && !isWorker()) return runPrimary(workers, log);
  const scoring = await openScoring(config, isWorker() ? perWorker(opts.servedLog as string) : opts.servedLog);
  const app = await buildServer(
    {
      ranker: scoring.ranker,
      metrics: scoring.metrics,
      metricsText: isWorker() ? clusterMetrics(scoring.metrics.registry) : undefined,
      log,
      models: scoring.models,
      storeProblem: () => (scoring.valkey.status === 'ready' ? null : `valkey ${scoring.valkey.status}`),
    },
    { maxCandidates: config.maxCandidates, bodyLimit, token: config.scoringToken },
  );
  const address = await app.listen({ port, host: opts.host });
  log.info({ address, model: scoring.models.model?.version ?? null }, 'serving');
  await untilSignal();
  await app.close();
  await scoring.close();
  leaveCluster();
}

/** `score`: consumes ad requests and publishes rankings until SIGINT/SIGTERM. */
export async function runScore(config: Config, opts: Record<string, string>): Promise<void> {
  if (config.kafka.length > 0 && !config.schemaRegistry)
    throw new ConfigError('score from Kafka needs a Schema Registry: pass --schema-registry URL');
  const concurrency = Number(opts.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1)
    throw new ConfigError('--concurrency must be a positive integer');
  const eventLog = openEventLog(config, log, 'tributary-score');
  await eventLog.ensureTopics(allTopics(config.namespace), config.partitions);
  const scoring = await openScoring(config, opts.servedLog);
  const consumer = new ScoreConsumer(
    {
      eventLog,
      serde: await openSerde(config),
      ranker: scoring.ranker,
      hasModel: () => scoring.models.model !== undefined,
      metrics: scoring.metrics,
      log,
    },
    {
      namespace: config.namespace,
      groupId: `${config.namespace}${opts.group}`,
      maxCandidates: config.maxCandidates,
      concurrency,
    },
  );
  const server = await serveMetrics(scoring.metrics.registry, opts.metricsPort, opts.metricsHost as string).catch(
    async (err) => {
      await scoring.close();
      throw err;
    },
  );
  await consumer.start();
  log.info({ model: scoring.models.model?.version ?? null, metrics: server?.address() ?? null }, 'scoring requests');
  await untilSignal();
  log.info({ scored: consumer.scored, deadLettered: consumer.deadLettered }, 'stopping');
  await consumer.stop();
  server?.close();
  await scoring.close();
}
