// Starts the real local servers the integration tests talk to (no Docker: scripts/services), unless they already
// run, and stops on teardown only what it started. Where a Docker engine exists, TRIBUTARY_TESTCONTAINERS=1 starts
// them with testcontainers instead. Around the run it checks that no test touched the default namespace.
import { spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { defaultChanges, defaultState } from './default-namespace.ts';

const SCRIPT = join(import.meta.dirname, '../../scripts/services/services.sh');
/** The single-node servers every integration test uses. */
export const SERVERS = ['valkey', 'kafka', 'registry'];
const PORTS: Record<string, number> = {
  valkey: Number(process.env.VALKEY_PORT ?? 6379),
  'valkey-cluster': Number(process.env.VALKEY_CLUSTER_PORT ?? 7101),
  kafka: Number(process.env.KAFKA_PORT ?? 9092),
  'kafka-cluster': Number(process.env.KAFKA_CLUSTER_PORT ?? 9191),
  registry: Number(process.env.REGISTRY_PORT ?? 8081),
  mlflow: Number(process.env.MLFLOW_PORT ?? 5000),
};

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.setTimeout(1000);
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.once('timeout', () => done(false));
  });
}

function services(action: string, names: string[]): number {
  const r = spawnSync('bash', [SCRIPT, action, ...names], {
    stdio: action === 'status' ? 'ignore' : 'inherit',
  });
  return r.status ?? 1;
}

async function startServers(names: string[]): Promise<() => Promise<void>> {
  if (process.env.TRIBUTARY_TESTCONTAINERS === '1') {
    const { startContainers } = await import('./containers.ts');
    return startContainers();
  }
  return startLocalServers(names);
}

/** Starts (scripts/services) those of `names` not answering; resolves to what stops the ones it started. */
export async function startLocalServers(names: string[]): Promise<() => Promise<void>> {
  // A server another clone (or worktree) started answers on its port though this clone's .services/ has no pid.
  const down = names.filter((n) => services('status', [n]) !== 0);
  const answering = await Promise.all(down.map((n) => listening(PORTS[n] as number)));
  const started = down.filter((_, i) => !answering[i]);
  if (started.length > 0 && services('start', started) !== 0) {
    throw new Error(`could not start ${started.join(', ')}: see the log tail above`);
  }
  return async () => {
    if (started.length > 0) services('stop', started);
  };
}

/** Starts `names` (those not running), and on teardown checks the default namespace and stops what it started. */
export async function setupServers(names: string[]): Promise<() => Promise<void>> {
  const stopServers = await startServers(names);
  const before = await defaultState();
  return async () => {
    // Read before stopping: a server this run started takes its data with it.
    const changes = defaultChanges(before, await defaultState()).map((c) => `  - ${c}`);
    await stopServers();
    if (changes.length > 0) {
      // Vitest reports an error thrown here but keeps the exit code of the tests: make the run fail.
      process.exitCode = 1;
      throw new Error(
        `tests wrote to the default (un-namespaced) pipeline, which the README's tour reads:\n${changes.join('\n')}\n` +
          'give every test a namespace of its own (topicOf(kind, ns), --namespace ns). If you ran tributary on the ' +
          'default namespace of these servers while the tests ran, that was it: run the tests again.',
      );
    }
  };
}

export default function setup(): Promise<() => Promise<void>> {
  return setupServers(SERVERS);
}
