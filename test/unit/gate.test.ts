// The promotion gate: the rule on figures (pure), then `tributary train --promote` on a real generated training set:
// a model trained on shuffled labels is registered but not promoted (exit 4, the failed checks with both figures,
// CURRENT unchanged), `--force` promotes it anyway (recorded), and a better model then replaces it.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runBackfill } from '../../src/backfill/run.ts';
import { fromEventFile } from '../../src/backfill/sources.ts';
import { writeEventFile } from '../../src/events/event-file.ts';
import { generate } from '../../src/events/generator.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { HOUR } from '../../src/features/time.ts';
import { AUC_TOLERANCE, CALIBRATION_BOUND, decide, LOGLOSS_TOLERANCE } from '../../src/model/gate.ts';
import { ModelRegistry, type TrainingRun } from '../../src/model/registry.ts';

describe('the gate rule', () => {
  const rows = { count: 1000, positives: 50, from: 'a', to: 'b' };
  const current = { auc: 0.7, logloss: 0.19, mean_pctr: 0.05 };
  const gate = (candidateScore: typeof current, force = false) =>
    decide({ candidate: 'new', current: 'old', rows, candidateScore, currentScore: current, force });

  it('promotes the first model, the same model, and over a current model the definitions no longer fit', () => {
    expect(decide({ candidate: 'new', current: null })).toMatchObject({ promote: true, reason: /first/ });
    expect(decide({ candidate: 'new', current: 'new' })).toMatchObject({ promote: true, reason: /already current/ });
    const d = decide({ candidate: 'new', current: 'old', currentMismatch: ['missing features: x'] });
    expect(d).toMatchObject({ promote: true, reason: /old does not match the definitions \(missing features: x\)/ });
  });

  it('holds on each failed check, naming both figures, and promotes within the tolerances', () => {
    expect(
      gate({ auc: 0.7 - AUC_TOLERANCE / 2, logloss: 0.19 * (1 + LOGLOSS_TOLERANCE / 2), mean_pctr: 0.05 }),
    ).toMatchObject({ promote: true, forced: false });
    const worseLoss = gate({ auc: 0.71, logloss: 0.2, mean_pctr: 0.05 });
    expect(worseLoss.promote).toBe(false);
    expect(worseLoss.reason).toBe(
      'log loss 0.20000 > current 0.19000 (+0.1% allowed: 0.19019) (on 1000 held-out rows)',
    );
    expect(gate({ auc: 0.69, logloss: 0.18, mean_pctr: 0.05 }).reason).toMatch(/^AUC 0.6900 < current 0.7000/);
    const high = gate({ auc: 0.71, logloss: 0.18, mean_pctr: 0.05 * (1 + CALIBRATION_BOUND) * 1.01 });
    expect(high).toMatchObject({ promote: false, reason: /calibration: mean pCTR \/ observed CTR = 1.1110/ });
    expect(high.checks.map((k) => [k.name, k.pass])).toEqual([
      ['logloss', true],
      ['auc', true],
      ['calibration', false],
    ]);
    const forced = gate({ auc: 0.5, logloss: 0.3, mean_pctr: 0.05 }, true);
    expect(forced).toMatchObject({ promote: true, forced: true, reason: /^forced: log loss .*; AUC / });
  });
});

describe('train --promote through the gate, on a generated training set', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gate-'));
  const trainingSet = join(dir, 'training.csv');
  const shuffled = join(dir, 'shuffled.csv');
  const models = join(dir, 'models');
  const env = { ...process.env, TRIBUTARY_MODELS_DIR: models, TRIBUTARY_CLICKHOUSE_DIR: join(dir, 'ch') };
  const train = (set: string, ...flags: string[]) =>
    spawnSync(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'train', '--training-set', set, '--eval-fraction', '0.25', ...flags],
      { encoding: 'utf8', env },
    );
  const registry = new ModelRegistry(models);
  const runOf = (version: string) => JSON.parse(readFileSync(join(models, version, 'run.json'), 'utf8')) as TrainingRun;

  beforeAll(async () => {
    const events = join(dir, 'events.ndjson');
    await writeEventFile(events, generate({ seed: 5, days: 2, impressionsPerDay: 8000, users: 1500, ads: 120 }));
    await runBackfill({
      features: new FeatureSet(DEFAULT_GROUPS),
      open: () => fromEventFile(events),
      sourceName: 'generated',
      out: trainingSet,
      attributionMs: HOUR,
      allowedLatenessMs: HOUR,
    });
    // The same rows with the training period's labels shuffled: the evaluation period keeps its real labels, so
    // both models are judged on the truth.
    const [header, ...lines] = readFileSync(trainingSet, 'utf8').trimEnd().split('\n');
    const cols = (header as string).split(',');
    const [t, l] = [cols.indexOf('event_time'), cols.indexOf('label')];
    const cells = lines.map((line) => line.split(','));
    const times = cells.map((c) => Number(c[t])).sort((a, b) => a - b);
    const cut = times[Math.floor(times.length * 0.7)] as number;
    const early = cells.filter((c) => Number(c[t]) < cut);
    const labels = early.map((c) => c[l] as string);
    let seed = 7;
    for (let i = labels.length - 1; i > 0; i--) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      const j = seed % (i + 1);
      [labels[i], labels[j]] = [labels[j] as string, labels[i] as string];
    }
    early.forEach((c, i) => {
      c[l] = labels[i] as string;
    });
    writeFileSync(shuffled, `${header}\n${cells.map((c) => c.join(',')).join('\n')}\n`);
    copyFileSync(`${trainingSet}.meta.json`, `${shuffled}.meta.json`);
  }, 60_000);

  it('keeps a good model current against a shuffled-labels one, which --force can still promote', async () => {
    const first = train(trainingSet, '--promote');
    expect(first.status, first.stderr).toBe(0);
    const good = (await registry.current()) as string;
    expect(runOf(good).gate).toMatchObject({ promote: true, current: null, reason: /first/ });

    const bad = train(shuffled, '--promote');
    expect(bad.status, bad.stderr).toBe(4);
    expect(await registry.current()).toBe(good);
    const held = (await registry.list()).find((e) => e.version !== good) as { version: string; run: TrainingRun };
    const d = held.run.gate;
    expect(d).toMatchObject({ promote: false, forced: false, candidate: held.version, current: good });
    // Judged on the same rows, with the figures in the reason and the record.
    expect(d?.rows?.count).toBe(held.run.data.eval?.rows);
    expect(d?.reason).toContain(
      `log loss ${d?.candidate_score?.logloss.toFixed(5)} > current ${d?.current_score?.logloss.toFixed(5)}`,
    );
    expect(d?.candidate_score?.auc).toBeLessThan((d?.current_score?.auc as number) - 0.05);
    expect(bad.stdout).toContain(`HOLD: ${d?.reason}`);
    const logged = readFileSync(join(models, 'runs.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((x) => JSON.parse(x));
    expect(logged.at(-1)).toMatchObject({ version: held.version, gate: { promote: false } });

    const forced = train(shuffled, '--promote', '--force');
    expect(forced.status, forced.stderr).toBe(0);
    expect(await registry.current()).toBe(held.version);
    expect(runOf(held.version).gate).toMatchObject({ promote: true, forced: true, reason: /^forced: / });

    // The better model replaces the forced one, on its own figures.
    const better = train(trainingSet, '--promote');
    expect(better.status, better.stderr).toBe(0);
    expect(await registry.current()).toBe(good);
    const g = runOf(good).gate;
    expect(g).toMatchObject({ promote: true, forced: false, current: held.version, reason: /^beats / });
    expect(g?.checks.every((k) => k.pass)).toBe(true);
  }, 90_000);

  it('refuses --force without --promote (exit 2)', () => {
    const r = train(trainingSet, '--force');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--force needs --promote/);
  });
});
