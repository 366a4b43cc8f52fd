// Where the test servers listen: the services' defaults unless the environment moves them.
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';

export const KAFKA_BROKERS = [`127.0.0.1:${process.env.KAFKA_PORT ?? '9092'}`];
/** The local three-broker Kafka (scripts/services/kafka-cluster.sh): brokers at KAFKA_CLUSTER_PORT and the two after. */
export const KAFKA_CLUSTER_BROKERS = [0, 1, 2].map(
  (i) => `127.0.0.1:${Number(process.env.KAFKA_CLUSTER_PORT ?? 9191) + i}`,
);
export const VALKEY_URL = `redis://127.0.0.1:${process.env.VALKEY_PORT ?? '6379'}`;
/** A node of the local Valkey Cluster (scripts/services/valkey-cluster.sh): any node names the cluster. */
export const VALKEY_CLUSTER_URL = `redis://127.0.0.1:${process.env.VALKEY_CLUSTER_PORT ?? '7101'}`;
/** The local MLflow server (scripts/services/mlflow.sh), started by the tests that use it. */
export const MLFLOW_URL = `http://127.0.0.1:${process.env.MLFLOW_PORT ?? '5000'}`;
export const REGISTRY_URL = `http://127.0.0.1:${process.env.REGISTRY_PORT ?? '8081'}/apis/ccompat/v7`;

/** Runs the `tributary` CLI as a user would, against these servers; resolves to its stdout and stderr. */
export const cliWithServers = (...args: string[]) =>
  promisify(execFile)(process.execPath, [
    '--import',
    'tsx',
    'src/cli/main.ts',
    '--kafka',
    KAFKA_BROKERS.join(','),
    '--schema-registry',
    REGISTRY_URL,
    ...args,
  ]);

/** A local TCP port free now, for a server a test or benchmark starts. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** The environment of a `tributary` run on embedded defaults whatever servers the shell names, plus `settings`. */
export const embeddedEnv = (settings: Record<string, string> = {}): NodeJS.ProcessEnv => ({
  ...process.env,
  TRIBUTARY_KAFKA: '',
  TRIBUTARY_VALKEY: '',
  TRIBUTARY_SCHEMA_REGISTRY: '',
  TRIBUTARY_CLICKHOUSE: '',
  ...settings,
});
