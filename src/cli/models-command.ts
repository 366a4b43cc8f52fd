// `tributary models list|show|promote|rollback`: the model registry from the command line.
import type { Command } from 'commander';
import type { Config } from '../config/config.ts';
import { readContract } from '../model/contract.ts';
import { openModelRegistry } from '../model/mlflow.ts';
import { ModelRegistry } from '../model/registry.ts';

const fixed = (v: unknown, digits: number) => (typeof v === 'number' ? v.toFixed(digits) : '-');

export function registerModelsCommand(program: Command, configOf: (cmd: Command) => Config): void {
  const models = program
    .command('models')
    .description('list, inspect, promote and roll back registered models (folder: --models / modelsDir)');
  const registryOf = (cmd: Command) => new ModelRegistry(configOf(cmd).modelsDir);
  // Promote and rollback move MLflow's alias too when --mlflow is set.
  const mirroredRegistryOf = (cmd: Command) => openModelRegistry(configOf(cmd));
  const say = (s: string) => process.stdout.write(`${s}\n`);

  models
    .command('list')
    .description('registered models, oldest first; * marks the current one')
    .action(async (_o: unknown, cmd: Command) => {
      const entries = await registryOf(cmd).list();
      if (!entries.length) {
        say(`no models in ${configOf(cmd).modelsDir} (train one: tributary train --help)`);
        return;
      }
      say('  version       trained at                rows     AUC     baseline  log loss  params');
      for (const { version, current, run } of entries) {
        const m = run.metrics;
        say(
          `${current ? '*' : ' '} ${version}  ${run.trained_at.padEnd(24)}  ${String(m.rows).padStart(7)}  ${fixed(m.auc, 4)}  ${fixed(m.baseline_auc, 4).padStart(8)}  ${fixed(m.logloss, 5).padStart(8)}  ${JSON.stringify(run.params)}`,
        );
      }
    });

  models
    .command('show <version>')
    .description("a model's contract (features, definitions version, training window) and its training run")
    .action(async (version: string, _o: unknown, cmd: Command) => {
      const registry = registryOf(cmd);
      const contract = readContract(await registry.read(version));
      const run = (await registry.list()).find((e) => e.version === version)?.run;
      say(JSON.stringify({ version, current: (await registry.current()) === version, contract, run }, null, 2));
    });

  models
    .command('promote <version>')
    .description('make a registered model current (servers watching the registry swap to it)')
    .action(async (version: string, _o: unknown, cmd: Command) => {
      const registry = await mirroredRegistryOf(cmd);
      const before = await registry.current();
      await registry.promote(version);
      say(`current: ${version}${before && before !== version ? ` (was ${before})` : ''}`);
    });

  models
    .command('rollback')
    .description('make the previously current model current again')
    .action(async (_o: unknown, cmd: Command) => {
      const registry = await mirroredRegistryOf(cmd);
      const before = await registry.current();
      say(`current: ${await registry.rollback()} (was ${before})`);
    });
}
