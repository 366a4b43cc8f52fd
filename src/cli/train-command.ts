// `tributary train`: fit a CTR model on a backfill training set, report it beside the baseline, register it.
import type { Command } from 'commander';
import { type Config, ConfigError } from '../config/config.ts';
import { FeatureSet } from '../features/compile.ts';
import { DEFAULT_GROUPS } from '../features/definitions.ts';
import { describeDecision, judge, NOT_PROMOTED_EXIT_CODE, registerDecided } from '../model/gate.ts';
import type { CalibrationBucket } from '../model/metrics.ts';
import { MLFLOW, Mlflow, openModelRegistry } from '../model/mlflow.ts';
import { train } from '../model/train.ts';

export function numberFlag(flag: string, v: string, ok: (n: number) => boolean, rule: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || !ok(n)) throw new ConfigError(`${flag} must be ${rule}, got "${v}"`);
  return n;
}

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(4)}`;

/** Model and baseline calibration side by side, one line per bucket of the model's predictions. */
function calibrationTable(model: CalibrationBucket[], baseline: CalibrationBucket[]): string[] {
  const lines = ['  bucket  pCTR range           rows   predicted  observed  | baseline predicted  observed'];
  model.forEach((b, i) => {
    const base = baseline[i];
    lines.push(
      `  ${String(i + 1).padStart(6)}  ${pct(b.from).padStart(7)} – ${pct(b.to).padEnd(7)}  ${String(b.rows).padStart(7)}   ${pct(b.predicted).padStart(9)}  ${pct(b.observed).padStart(8)}  | ${base ? `${pct(base.predicted).padStart(18)}  ${pct(base.observed).padStart(8)}` : ''}`,
    );
  });
  return lines;
}

/** Where the run and version went in MLflow (the URL without credentials). */
function mlflowNote(config: Config, promoted: boolean): string {
  const m = new Mlflow(config.mlflow as string, config.namespace);
  return `MLflow ${m.where}: run in experiment "${m.experimentName}", version of model "${m.modelName}"${promoted ? ` (alias ${MLFLOW.alias})` : ''}`;
}

export function registerTrainCommand(program: Command, configOf: (cmd: Command) => Config): void {
  program
    .command('train')
    .description('fit a CTR model on a training set, evaluate it on the later period, write ONNX and register it')
    .requiredOption('--training-set <file>', 'CSV written by `tributary backfill` (its .meta.json beside it)')
    .option('--eval-fraction <x>', 'share of the latest rows held out for evaluation', '0.2')
    .option('--l2 <x>', 'L2 penalty on the standardised weights (objective: mean log loss + l2/2·|w|²)', '0.01')
    .option('--seed <n>', 'seed of the bootstrap behind the AUC-lift interval', '1')
    .option(
      '--promote',
      `make the new model current if it passes the promotion gate against the current one (exit ${NOT_PROMOTED_EXIT_CODE} when it does not; it becomes current anyway when there is none)`,
    )
    .option('--force', 'with --promote: promote even when the gate says no (recorded as forced)')
    .addHelpText(
      'after',
      `
The gate (src/model/gate.ts): both models are scored by onnxruntime on this run's evaluation rows; the new one
is promoted when its log loss is at most the current one's +0.1%, its AUC at least the current one's -0.002, and
its mean pCTR within 10% of the observed CTR. Exit ${NOT_PROMOTED_EXIT_CODE}: trained and registered, not promoted.

Examples:
  tributary train --training-set training.csv
  tributary train --training-set training.csv --l2 0.1 --models /srv/models --promote
  tributary train --training-set training.csv --promote --force
  tributary train --training-set training.csv --mlflow http://127.0.0.1:5000   # also logged to MLflow`,
    )
    .action(async (opts: Record<string, string | boolean>, cmd: Command) => {
      const config = configOf(cmd);
      const evalFraction = numberFlag(
        '--eval-fraction',
        opts.evalFraction as string,
        (n) => n > 0 && n < 1,
        'in (0, 1)',
      );
      const l2 = numberFlag('--l2', opts.l2 as string, (n) => n > 0, 'positive');
      const seed = numberFlag('--seed', opts.seed as string, Number.isInteger, 'an integer');
      if (opts.force === true && opts.promote !== true) throw new ConfigError('--force needs --promote');
      const features = new FeatureSet(DEFAULT_GROUPS);
      // Before training: an unreachable MLflow stops the command before any work.
      const registry = await openModelRegistry(config);
      const r = await train({ trainingSet: opts.trainingSet as string, features, evalFraction, l2, seed });
      const decision = opts.promote === true ? await judge(registry, r, features, opts.force === true) : undefined;
      const { version, before, promoted } = await registerDecided(registry, r.bytes, r.run, decision);

      const status =
        before === version
          ? 'already current (same data and parameters, same model)'
          : promoted
            ? 'now current'
            : `current stays ${before} (promote with \`tributary models promote ${version}\`)`;
      const m = r.metrics;
      const { train: tr, eval: ev } = r.run.data;
      const say = (s: string) => process.stdout.write(`${s}\n`);
      say(`training set  ${r.run.training_set} (definitions ${features.version}, ${features.names.length} features)`);
      say(`train         ${m.rows} rows, ${m.positives} clicks, ${tr?.from} .. ${tr?.to}`);
      say(
        `evaluation    ${m.eval_rows} rows, ${m.eval_positives} clicks (CTR ${pct(m.eval_ctr)}), ${ev?.from} .. ${ev?.to}`,
      );
      say(`                    model  baseline (${m.baseline_feature})`);
      say(
        `AUC            ${m.auc.toFixed(4).padStart(9)}  ${m.baseline_auc.toFixed(4)}   lift 95% CI [${signed(m.auc_lift_ci95[0])}, ${signed(m.auc_lift_ci95[1])}]`,
      );
      say(`log loss       ${m.logloss.toFixed(5).padStart(9)}  ${m.baseline_logloss.toFixed(5)}`);
      say(`mean pCTR      ${pct(m.mean_pctr).padStart(9)}  (observed ${pct(m.eval_ctr)})`);
      say('calibration on the evaluation rows (each scorer: 10 equal-count buckets of its own predictions):');
      for (const line of calibrationTable(m.calibration, m.baseline_calibration)) say(line);
      if (decision) for (const line of describeDecision(decision)) say(line);
      say(`model ${version} registered in ${config.modelsDir} in ${r.run.seconds}s; ${status}`);
      if (decision && !decision.promote) process.exitCode = NOT_PROMOTED_EXIT_CODE;
      if (config.mlflow) say(mlflowNote(config, promoted));
    });
}
