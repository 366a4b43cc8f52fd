// `tributary models list|show|register|promote|rollback`: the model registry from the command line.
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { type Config, ConfigError } from '../config/config.ts';
import { FeatureSet } from '../features/compile.ts';
import { DEFAULT_GROUPS } from '../features/definitions.ts';
import { readContract } from '../model/contract.ts';
import { openModelRegistry } from '../model/mlflow.ts';
import { ModelRegistry } from '../model/registry.ts';
import { listRuns, readRecord } from '../model/retrain.ts';
import { registerModel } from '../scoring/register-model.ts';

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
    .description(
      "a model's contract (features, definitions version, training window), its training run with the gate's decision, and the retrain run's record",
    )
    .action(async (version: string, _o: unknown, cmd: Command) => {
      const registry = registryOf(cmd);
      const contract = readContract(await registry.read(version));
      const run = (await registry.list()).find((e) => e.version === version)?.run;
      const retrain = run?.retrain_run ? await readRecord(registry, run.retrain_run) : undefined;
      say(
        JSON.stringify({ version, current: (await registry.current()) === version, contract, run, retrain }, null, 2),
      );
    });

  models
    .command('runs')
    .description("`tributary retrain` runs, oldest first: steps done, the model and the gate's verdict")
    .action(async (_o: unknown, cmd: Command) => {
      const runs = await listRuns(registryOf(cmd));
      if (!runs.length) {
        say(`no retrain runs in ${configOf(cmd).modelsDir}/runs (see tributary retrain --help)`);
        return;
      }
      say('  run               started at                steps done                 model         verdict');
      for (const r of runs) {
        const g = r.record?.gate;
        const verdict = g
          ? `${g.promote ? (g.forced ? 'promoted (forced)' : 'promoted') : 'held'}: ${g.reason}`
          : 'incomplete';
        say(
          `  ${r.id.padEnd(16)}  ${r.started_at.padEnd(24)}  ${r.done.join(',').padEnd(25)}  ${(r.record?.version ?? '-').padEnd(12)}  ${verdict}`,
        );
      }
    });

  models
    .command('register <file>')
    .description(
      'register an ONNX model trained anywhere: checks its feature contract and a smoke prediction first (exit 2 if refused)',
    )
    .option('--promote', 'make it current (it also becomes current when there is none)')
    .addHelpText(
      'after',
      `
The model needs one float32 input "features" [n, F] taking the raw vector in the definitions' order, metadata
tributary.features (JSON array of names, that order) and tributary.definitions_version (see \`tributary features\`),
and an output "pctr" [n, 1] or a float "probabilities" [n, 2] (a converted classifier with zipmap off).
See examples/lightgbm.

Examples:
  tributary models register model.onnx
  tributary models register lightgbm.onnx --models /srv/models --promote`,
    )
    .action(async (file: string, opts: { promote?: boolean }, cmd: Command) => {
      let bytes: Uint8Array;
      try {
        bytes = new Uint8Array(await readFile(file));
      } catch (err) {
        throw new ConfigError(`cannot read ${file}: ${(err as Error).message}`);
      }
      const registry = await mirroredRegistryOf(cmd);
      const { version, contract, smoke } = await registerModel(registry, bytes, file, new FeatureSet(DEFAULT_GROUPS));
      const before = await registry.current();
      const promote = opts.promote === true || before === null;
      if (promote) await registry.promote(version);
      const range = (xs: number[]) => `${Math.min(...xs).toFixed(4)}..${Math.max(...xs).toFixed(4)}`;
      say(
        `contract ok: ${contract.features.length} features, definitions ${contract.definitionsVersion}, output "${contract.output}"`,
      );
      say(
        `smoke prediction ok: ${smoke.rows} rows, pCTR ${range(smoke.pctr)} (all defaults: ${smoke.pctr[0]?.toFixed(4)})`,
      );
      say(
        `model ${version} registered in ${configOf(cmd).modelsDir}; ${
          before === version
            ? 'already current'
            : promote
              ? 'now current'
              : `current stays ${before} (promote with \`tributary models promote ${version}\`)`
        }`,
      );
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
