// Where the test servers listen: the services' defaults unless the environment moves them.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

export const KAFKA_BROKERS = [`127.0.0.1:${process.env.KAFKA_PORT ?? '9092'}`];
export const VALKEY_URL = `redis://127.0.0.1:${process.env.VALKEY_PORT ?? '6379'}`;
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
