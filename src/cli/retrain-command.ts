// `tributary retrain`: backfill -> train -> gate -> promote as one idempotent, resumable job (src/model/retrain.ts);
// what the nightly CronJob runs.

import { statSync } from 'node:fs';
import type { ClickHouseClient } from '@clickhouse/client';
import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { type Config, ConfigError } from '../config/config.ts';
import { FeatureSet } from '../features/compile.ts';
import { DEFAULT_GROUPS } from '../features/definitions.ts';
import { describeDecision, NOT_PROMOTED_EXIT_CODE } from '../model/gate.ts';
import { openModelRegistry } from '../model/mlflow.ts';
import { type RetrainInputs, type RetrainRecord, runRetrain, STEPS } from '../model/retrain.ts';
import { openClickHouse } from '../offline/clickhouse.ts';
import { backfillSource, parseTime, positiveInt } from './backfill-command.ts';
import { durationOption } from './options.ts';
import { numberFlag } from './train-command.ts';

/** The history's extent, part of the run's inputs: a new night's history is a new run. */
function historyOf(src: string): unknown {
  if (src.startsWith('file:')) {
    const path = src.slice(5);
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(path);
    } catch {
      throw new ConfigError(`--source ${src}: no such file`);
    }
    return { bytes: st.size, modified: st.mtime.toISOString() };
  }
  // The stream keeps writing, so the offline store's extent changes by the second: a pod restarted mid-run must
  // find its run again. One run per UTC day (the CronJob's cadence); --run-id names another.
  if (src === 'clickhouse') return { day: new Date().toISOString().slice(0, 10) };
  throw new ConfigError(
    `--source ${src}: retrain names its run after the history's extent, known for clickhouse and file:PATH; for kafka pass --run-id`,
  );
}

export function printRecord(r: RetrainRecord, say: (s: string) => void): void {
  const m = r.metrics;
  say(`run           ${r.id} (${r.inputs.source}, definitions ${r.inputs.definitions_version})`);
  say(
    `training set  ${r.training_set.rows} rows, ${r.training_set.positives} clicks, ${r.training_set.first} .. ${r.training_set.last}`,
  );
  say(
    `model         ${r.version}: AUC ${m.auc.toFixed(4)} (baseline ${m.baseline_auc.toFixed(4)}), log loss ${m.logloss.toFixed(5)} (baseline ${m.baseline_logloss.toFixed(5)})`,
  );
  for (const line of describeDecision(r.gate)) say(line);
  say(
    `current       ${r.current ?? 'none'}${r.promoted ? '' : ` (${r.version} registered, not promoted: \`tributary models promote ${r.version}\`)`}`,
  );
}

export function registerRetrainCommand(program: Command, configOf: (cmd: Command) => Config): void {
  program
    .command('retrain')
    .description('backfill -> train -> gate -> promote as one resumable job (what the nightly CronJob runs)')
    .option(
      '--source <src>',
      "clickhouse (the stream's offline store) or file:PATH, as for `tributary backfill`",
      'clickhouse',
    )
    .option('--attribution <duration>', 'a click within this long after the impression makes it positive', '1h')
    .option('--allowed-lateness <duration>', "the stream's lateness rule (must match the stream's)", '1h')
    .option('--max-clock-skew <duration>', "the stream's clock-skew rule, for --source kafka", '10m')
    .option('--from <iso>', 'first impression time to train on')
    .option('--to <iso>', 'train on impressions before this time')
    .option('--eval-fraction <x>', 'share of the latest rows held out for evaluation and the gate', '0.2')
    .option('--l2 <x>', 'L2 penalty on the standardised weights', '0.01')
    .option('--seed <n>', 'seed of the bootstrap behind the AUC-lift interval', '1')
    .option('--force', 'promote even when the gate says no (recorded as forced)')
    .option('--run-id <id>', "name the run (default: a hash of the inputs, the history's extent included)")
    .option('--checkpoint-every <events>', 'records between backfill checkpoints', '1000000')
    .addHelpText(
      'after',
      `
Each step's output and state go to <models>/runs/<id>/: a killed run resumes at the step it was in (the backfill
from its checkpoint), a completed one only prints its record. The gate is \`train --promote\`'s (see
\`tributary train --help\`). Exit ${NOT_PROMOTED_EXIT_CODE}: trained and registered, not promoted.

Examples:
  tributary retrain                                   # the stream's history in ClickHouse, nightly
  tributary retrain --source file:.data/events.ndjson --models .data/models
  tributary models runs && tributary models show <version>`,
    )
    .action(async (opts: Record<string, string | boolean | undefined>, cmd: Command) => {
      const config = configOf(cmd);
      const features = new FeatureSet(DEFAULT_GROUPS);
      const src = opts.source as string;
      const attribution = durationOption('--attribution', opts.attribution as string);
      const lateness = durationOption('--allowed-lateness', opts.allowedLateness as string);
      const skew = durationOption('--max-clock-skew', opts.maxClockSkew as string);
      const from = parseTime('--from', opts.from as string | undefined);
      const to = parseTime('--to', opts.to as string | undefined);
      const checkpointEvery = positiveInt('--checkpoint-every', opts.checkpointEvery as string);
      const params = {
        l2: numberFlag('--l2', opts.l2 as string, (n) => n > 0, 'positive'),
        eval_fraction: numberFlag('--eval-fraction', opts.evalFraction as string, (n) => n > 0 && n < 1, 'in (0, 1)'),
        seed: numberFlag('--seed', opts.seed as string, Number.isInteger, 'an integer'),
      };
      const runId = opts.runId as string | undefined;
      if (runId !== undefined && !/^[\w.-]{1,64}$/.test(runId))
        throw new ConfigError(`--run-id "${runId}" must be 1-64 letters, digits, '.', '_' or '-'`);
      let ch: ClickHouseClient | undefined;
      const clickhouse = async () => {
        ch ??= await openClickHouse({ url: config.clickhouse, dir: config.clickhouseDir });
        return ch;
      };
      const say = (s: string) => process.stdout.write(`${s}\n`);
      const bar = process.stderr.isTTY
        ? new SingleBar({ format: '  replay {bar} {value} events | {duration}s' })
        : undefined;
      try {
        const inputs: RetrainInputs = {
          source: src,
          history: runId === undefined ? historyOf(src) : null,
          definitions_version: features.version,
          attribution_ms: attribution,
          allowed_lateness_ms: lateness,
          from: from === undefined ? null : new Date(from).toISOString(),
          to: to === undefined ? null : new Date(to).toISOString(),
          params,
        };
        const t0 = performance.now();
        const { record, fresh } = await runRetrain({
          // With MLflow configured, the run's version and the champion alias are mirrored there.
          registry: await openModelRegistry(config),
          features,
          inputs,
          id: runId,
          force: opts.force === true,
          checkpointEvery,
          openSource: () => backfillSource(config, src, skew, clickhouse),
          onStep: (step, event, detail) => {
            const n = `[${STEPS.indexOf(step) + 1}/${STEPS.length}] ${step.padEnd(8)}`;
            if (event === 'start') {
              say(`${n} running`);
              if (step === 'backfill') bar?.start(0, 0);
            } else {
              if (step === 'backfill') bar?.stop();
              const secs = ((performance.now() - t0) / 1000).toFixed(1);
              say(
                `${n} ${event === 'kept' ? 'done earlier' : event === 'resume' ? 'resuming' : 'done'}${detail ? `: ${detail}` : ''}${event === 'done' ? ` (${secs}s)` : ''}`,
              );
            }
          },
          onProgress: (events) => {
            bar?.setTotal(Math.max(events, bar.getTotal()));
            bar?.update(events);
          },
        });
        if (!fresh) say(`run ${record.id} already complete (${record.completed_at}): nothing to do`);
        printRecord(record, say);
        if (!record.promoted) process.exitCode = NOT_PROMOTED_EXIT_CODE;
      } finally {
        bar?.stop();
        await ch?.close();
      }
    });
}
