// The `tributary` command line.
import { Command, CommanderError } from 'commander';
import { ConfigError, describeConfig, loadConfig } from '../config/config.ts';
import { ServiceUnreachableError } from '../config/unreachable.ts';
import { SchemaCompatibilityError } from '../events/registry.ts';
import { ModelContractError } from '../model/contract.ts';
import { registerBackfillCommand } from './backfill-command.ts';
import { registerConsoleCommand } from './console-command.ts';
import { registerDeadLettersCommand } from './dead-letters-command.ts';
import { registerDemoCommand } from './demo-command.ts';
import { registerEventCommands } from './events-commands.ts';
import { registerFeaturesCommand } from './features-command.ts';
import { registerModelsCommand } from './models-command.ts';
import { registerParityCommand } from './parity-command.ts';
import { registerRetrainCommand } from './retrain-command.ts';
import { registerScoringCommands } from './scoring-commands.ts';
import { registerServicesCommand } from './services-command.ts';
import { registerSqlCommand } from './sql-command.ts';
import { registerStreamCommand } from './stream-command.ts';
import { registerTrainCommand } from './train-command.ts';
import { registerVerifyCommand } from './verify-command.ts';

const program = new Command('tributary')
  .description('Real-time ad features and scoring: Kafka -> features -> Valkey + ClickHouse -> ONNX ranking')
  .option('--config <file>', 'JSON config file (default: ./tributary.config.json if present)')
  .option('--kafka <brokers>', 'Kafka bootstrap servers, comma-separated; default: the file log [env TRIBUTARY_KAFKA]')
  .option('--log-dir <dir>', 'the file-based event log used without Kafka (.data/log) [env TRIBUTARY_LOG_DIR]')
  .option(
    '--schema-registry <url>',
    'Schema Registry URL (Confluent API); default: in memory [env TRIBUTARY_SCHEMA_REGISTRY]',
  )
  .option('--valkey <url>', 'Valkey URL, redis://host:port; default: in process [env TRIBUTARY_VALKEY]')
  .option('--clickhouse <url>', 'ClickHouse server URL; default: embedded engine [env TRIBUTARY_CLICKHOUSE]')
  .option('--clickhouse-dir <dir>', 'embedded ClickHouse data folder [env TRIBUTARY_CLICKHOUSE_DIR]')
  .option(
    '--clickhouse-cluster <name>',
    'create the offline tables Replicated + Distributed on this cluster of the --clickhouse server [env TRIBUTARY_CLICKHOUSE_CLUSTER]',
  )
  .option('--partitions <n>', 'partitions for topics this command creates [env TRIBUTARY_PARTITIONS]')
  .option('--namespace <prefix>', 'prefix for topics, consumer group and Valkey keys [env TRIBUTARY_NAMESPACE]')
  .option('--models <dir>', 'model registry folder [env TRIBUTARY_MODELS_DIR]')
  .option(
    '--mlflow <url>',
    'MLflow tracking server: log training runs, register versions, move the champion alias [env TRIBUTARY_MLFLOW_URL]',
  )
  .addHelpText(
    'after',
    `
With no server configured everything runs in this process (file log, in-process online store, embedded
ClickHouse). Settings: flags > environment (TRIBUTARY_*) > ./tributary.config.json (or --config) > defaults.

Examples:
  npm start                                   # the whole loop on embedded defaults
  tributary generate --days 1 && tributary stream --until-caught-up
  tributary config --kafka 127.0.0.1:9092     # print the effective configuration`,
  )
  // Usage mistakes are printed by the handler below as one line, without the help text.
  .configureOutput({ outputError: () => {} })
  .exitOverride();

function configOf(cmd: Command) {
  const g = cmd.optsWithGlobals();
  return loadConfig(
    {
      kafka: g.kafka,
      logDir: g.logDir,
      schemaRegistry: g.schemaRegistry,
      valkey: g.valkey,
      clickhouse: g.clickhouse,
      clickhouseDir: g.clickhouseDir,
      clickhouseCluster: g.clickhouseCluster,
      partitions: g.partitions,
      namespace: g.namespace,
      modelsDir: g.models,
      mlflow: g.mlflow,
      scoringToken: g.token,
      maxCandidates: g.maxCandidates,
      servedSampleRate: g.sampleRate,
      rankTimeoutMs: g.rankTimeout,
      readCache: g.readCache,
    },
    process.env,
    g.config,
  );
}

program
  .command('config')
  .description('print the effective configuration (secrets masked)')
  .addHelpText(
    'after',
    '\nExamples:\n  tributary config\n  TRIBUTARY_VALKEY=redis://:secret@127.0.0.1:6379 tributary config --kafka 127.0.0.1:9092',
  )
  .action((_o: unknown, cmd: Command) => {
    process.stdout.write(`${describeConfig(configOf(cmd))}\n`);
  });

registerEventCommands(program, configOf);
registerStreamCommand(program, configOf);
registerFeaturesCommand(program, configOf);
registerBackfillCommand(program, configOf);
registerParityCommand(program, configOf);
registerVerifyCommand(program, configOf);
registerDeadLettersCommand(program, configOf);
registerSqlCommand(program, configOf);
registerTrainCommand(program, configOf);
registerModelsCommand(program, configOf);
registerRetrainCommand(program, configOf);
registerScoringCommands(program, configOf);
registerDemoCommand(program, configOf);
registerConsoleCommand(program, configOf);
registerServicesCommand(program);

/**
 * Exit codes: 0 ok, 1 failure or bad input rows, 2 usage or configuration error, 3 a server is unreachable,
 * 4 a model was trained and registered but the promotion gate kept the current one (`train --promote`, `retrain`).
 */
try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    if (err.exitCode === 0) process.exit(0);
    process.stderr.write(`tributary: ${err.message.replace(/^error: /, '')} (see \`tributary --help\`)\n`);
    process.exit(2);
  }
  const known =
    err instanceof ConfigError || err instanceof SchemaCompatibilityError || err instanceof ModelContractError;
  const message = (err as Error).message.split('\n', 1)[0];
  process.stderr.write(`tributary: ${message}\n`);
  process.exit(err instanceof ServiceUnreachableError ? 3 : known ? 2 : 1);
}
