// `tributary stream`: wiring of the stream service to the configured servers.
import { createServer } from 'node:http';
import type { Command } from 'commander';
import { Valkey } from 'iovalkey';
import { type Config, ConfigError } from '../config/config.ts';
import { allTopics } from '../events/catalog.ts';
import { createRegistryClient } from '../events/registry.ts';
import { EventSerde } from '../events/serde.ts';
import { EVENT_KINDS } from '../events/types.ts';
import { FeatureSet } from '../features/compile.ts';
import { DEFAULT_GROUPS } from '../features/definitions.ts';
import { parseDuration } from '../features/time.ts';
import { createKafka, ensureTopics, withAdmin } from '../kafka/client.ts';
import { openClickHouse } from '../offline/clickhouse.ts';
import { ensureOfflineSchema } from '../offline/schema.ts';
import { OfflineSink } from '../offline/sink.ts';
import { ValkeyStore } from '../online/valkey-store.ts';
import { ValkeyCheckpoints } from '../streams/checkpoint.ts';
import { StreamMetrics } from '../streams/metrics.ts';
import { StreamService } from '../streams/service.ts';
import { log } from './log.ts';

export function registerStreamCommand(program: Command, configOf: (cmd: Command) => Config): void {
  program
    .command('stream')
    .description(
      'consume ad_impressions and ad_clicks into windowed features: Valkey (online) and ClickHouse (offline)',
    )
    .option('--group <id>', 'consumer group id (run more instances with the same id to scale out)', 'tributary-stream')
    .option(
      '--allowed-lateness <duration>',
      'events older than the partition watermark by more go to dead letters',
      '1h',
    )
    .option('--max-batch <n>', 'most events processed and written per batch', '5000')
    .option('--metrics-port <port>', 'serve Prometheus metrics at http://127.0.0.1:PORT/metrics')
    .option('--no-offline', 'do not write ClickHouse')
    .option(
      '--record-served',
      'record the vector each impression would have been served (ClickHouse served_vectors; for `tributary parity`)',
    )
    .addHelpText(
      'after',
      '\nExample:\n  tributary stream --kafka 127.0.0.1:9092 --schema-registry http://127.0.0.1:8081/apis/ccompat/v7 \\\n    --valkey redis://127.0.0.1:6379 --metrics-port 9464',
    )
    .action(async (opts: Record<string, string | boolean>, cmd: Command) => {
      const config = configOf(cmd);
      if (config.kafka.length === 0) throw new ConfigError('stream needs Kafka: pass --kafka host:port');
      if (!config.schemaRegistry) throw new ConfigError('stream needs a Schema Registry: pass --schema-registry URL');
      if (!config.valkey)
        throw new ConfigError('stream needs Valkey for online features: pass --valkey redis://host:port');
      const maxBatch = Number(opts.maxBatch);
      if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new ConfigError('--max-batch must be a positive integer');
      const allowedLatenessMs = parseDuration(String(opts.allowedLateness));

      const features = new FeatureSet(DEFAULT_GROUPS);
      const serde = new EventSerde(createRegistryClient(config.schemaRegistry));
      await serde.prepare(EVENT_KINDS);
      const kafka = createKafka(config.kafka, 'tributary-stream');
      await withAdmin(kafka, config.kafka, (admin) =>
        ensureTopics(admin, allTopics(config.namespace), config.partitions),
      );
      // Failed commands surface quickly; the service retries them with backoff and keeps its group membership.
      const valkey = new Valkey(config.valkey, { enableAutoPipelining: true, maxRetriesPerRequest: 2 });
      valkey.on('error', (err) => log.warn({ err: err.message }, 'valkey connection error'));
      const ttlSeconds = Math.ceil((features.retentionMs + allowedLatenessMs) / 1000);
      const online = new ValkeyStore(valkey, {
        namespace: config.namespace,
        ttlSeconds,
        retentionMs: features.retentionMs,
      });
      let offline: OfflineSink | undefined;
      let closeOffline = async () => {};
      if (opts.offline !== false) {
        const ch = await openClickHouse({ url: config.clickhouse, dir: config.clickhouseDir });
        await ensureOfflineSchema(ch);
        offline = new OfflineSink(ch);
        closeOffline = () => ch.close();
      }
      const metrics = new StreamMetrics();
      const groupId = `${config.namespace}${opts.group}`;
      const service = new StreamService(
        {
          kafka,
          serde,
          features,
          online,
          offline,
          served: opts.recordServed ? online : undefined,
          checkpoints: new ValkeyCheckpoints(valkey, groupId),
          metrics,
          log,
        },
        { namespace: config.namespace, groupId, allowedLatenessMs, maxBatch },
      );
      const server = opts.metricsPort
        ? createServer(async (req, res) => {
            if (req.url !== '/metrics') return void res.writeHead(404).end();
            res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(await metrics.registry.metrics());
          }).listen(Number(opts.metricsPort), '127.0.0.1')
        : undefined;

      await service.start();
      log.info({ groupId, features: features.names.length, version: features.version }, 'streaming');
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      log.info({ processed: service.processed }, 'stopping');
      await service.stop();
      server?.close();
      valkey.disconnect();
      await closeOffline();
    });
}
