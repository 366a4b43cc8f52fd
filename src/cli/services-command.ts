// `tributary services`: the local servers (no Docker), delegating to scripts/services/*.sh.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '../../scripts/services/services.sh');

export function registerServicesCommand(program: Command): void {
  program
    .command('services')
    .description(
      'install, start, stop or show the local Kafka (KRaft), Kafka cluster, Valkey, Valkey Cluster, Schema Registry and MLflow',
    )
    .argument('<action>', 'install | start | stop | status')
    .argument('[names...]', 'kafka kafka-cluster valkey valkey-cluster registry mlflow (default: all but mlflow)')
    .addHelpText('after', '\nExamples:\n  tributary services start\n  tributary services status kafka')
    .action((action: string, names: string[]) => {
      const r = spawnSync('bash', [SCRIPT, action, ...names], { stdio: 'inherit' });
      process.exitCode = r.status ?? 1;
    });
}
