// The `tributary` command line.
import { Command, CommanderError } from 'commander';
import { ConfigError, describeConfig, loadConfig } from '../config/config.ts';
import { SchemaCompatibilityError } from '../events/registry.ts';
import { KafkaUnreachableError } from '../kafka/client.ts';
import { registerBackfillCommand } from './backfill-command.ts';
import { registerDemoCommand } from './demo-command.ts';
import { registerEventCommands } from './events-commands.ts';
import { registerFeaturesCommand } from './features-command.ts';
import { registerModelsCommand } from './models-command.ts';
import { registerParityCommand } from './parity-command.ts';
import { registerScoringCommands } from './scoring-commands.ts';
import { registerServicesCommand } from './services-command.ts';
import { registerStreamCommand } from './stream-command.ts';
import { registerTrainCommand } from './train-command.ts';

const program = new Command('tributary')
  .description('Real-time ad features and scoring: Kafka -> features -> Valkey + ClickHouse -> ONNX ranking')
  .option('--config <file>', 'JSON config file (default: ./tributary.config.json if present)')
  .option('--kafka <brokers>', 'Kafka bootstrap servers, comma-separated [env TRIBUTARY_KAFKA]')
  .option('--schema-registry <url>', 'Schema Registry URL (Confluent API) [env TRIBUTARY_SCHEMA_REGISTRY]')
  .option('--valkey <url>', 'Valkey URL, redis://host:port [env TRIBUTARY_VALKEY]')
  .option('--clickhouse <url>', 'ClickHouse server URL; default: embedded engine [env TRIBUTARY_CLICKHOUSE]')
  .option('--clickhouse-dir <dir>', 'embedded ClickHouse data folder [env TRIBUTARY_CLICKHOUSE_DIR]')
  .option('--partitions <n>', 'partitions for topics this command creates [env TRIBUTARY_PARTITIONS]')
  .option('--namespace <prefix>', 'prefix for topics, consumer group and Valkey keys [env TRIBUTARY_NAMESPACE]')
  .option('--models <dir>', 'model registry folder [env TRIBUTARY_MODELS_DIR]')
  .showHelpAfterError()
  .exitOverride();

function configOf(cmd: Command) {
  const g = cmd.optsWithGlobals();
  return loadConfig(
    {
      kafka: g.kafka,
      schemaRegistry: g.schemaRegistry,
      valkey: g.valkey,
      clickhouse: g.clickhouse,
      clickhouseDir: g.clickhouseDir,
      partitions: g.partitions,
      namespace: g.namespace,
      modelsDir: g.models,
      scoringToken: g.token,
      maxCandidates: g.maxCandidates,
      servedSampleRate: g.sampleRate,
      rankTimeoutMs: g.rankTimeout,
    },
    process.env,
    g.config,
  );
}

program
  .command('config')
  .description('print the effective configuration (secrets masked)')
  .action((_o: unknown, cmd: Command) => {
    process.stdout.write(`${describeConfig(configOf(cmd))}\n`);
  });

registerEventCommands(program, configOf);
registerStreamCommand(program, configOf);
registerFeaturesCommand(program, configOf);
registerBackfillCommand(program, configOf);
registerParityCommand(program, configOf);
registerTrainCommand(program, configOf);
registerModelsCommand(program, configOf);
registerScoringCommands(program, configOf);
registerDemoCommand(program);
registerServicesCommand(program);

/** Exit codes: 0 ok, 1 failure or bad input rows, 2 usage or configuration error, 3 a server is unreachable. */
try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  const known = err instanceof ConfigError || err instanceof SchemaCompatibilityError;
  process.stderr.write(`tributary: ${(err as Error).message}\n`);
  process.exit(err instanceof KafkaUnreachableError ? 3 : known ? 2 : 1);
}
