// Starts the real local servers the integration tests talk to (no Docker: scripts/services), unless they already
// run, and stops on teardown only what it started. Where a Docker engine exists, TRIBUTARY_TESTCONTAINERS=1 starts
// them with testcontainers instead.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const SCRIPT = join(import.meta.dirname, '../../scripts/services/services.sh');
const SERVICES = ['valkey', 'kafka', 'registry'];

function services(action: string, names: string[]): number {
  const r = spawnSync('bash', [SCRIPT, action, ...names], {
    stdio: action === 'status' ? 'ignore' : 'inherit',
  });
  return r.status ?? 1;
}

export default async function setup(): Promise<() => Promise<void>> {
  if (process.env.TRIBUTARY_TESTCONTAINERS === '1') {
    const { startContainers } = await import('./containers.ts');
    return startContainers();
  }
  const started = SERVICES.filter((n) => services('status', [n]) !== 0);
  if (started.length > 0 && services('start', started) !== 0) {
    throw new Error(`could not start ${started.join(', ')}: see the log tail above`);
  }
  return async () => {
    if (started.length > 0) services('stop', started);
  };
}
