// `tributary retrain` end to end on the embedded defaults (a generated event file): a run killed with SIGKILL once
// its backfill is done resumes at the train step without redoing the backfill and ends with the same record as
// an uninterrupted run; a second run with the same inputs does nothing; `models show` prints the record.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeEventFile } from '../../src/events/event-file.ts';
import { generate } from '../../src/events/generator.ts';

const dir = mkdtempSync(join(tmpdir(), 'retrain-'));
const events = join(dir, 'events.ndjson');
const env = (models: string) => ({
  ...process.env,
  TRIBUTARY_KAFKA: '',
  TRIBUTARY_VALKEY: '',
  TRIBUTARY_SCHEMA_REGISTRY: '',
  TRIBUTARY_CLICKHOUSE: '',
  TRIBUTARY_CLICKHOUSE_DIR: join(dir, 'ch'),
  TRIBUTARY_MODELS_DIR: join(dir, models),
});
const args = (a: string[]) => ['--import', 'tsx', 'src/cli/main.ts', ...a];
const retrainArgs = ['retrain', '--source', `file:${events}`, '--eval-fraction', '0.25'];
const cli = (models: string, ...a: string[]) =>
  spawnSync(process.execPath, args(a), { encoding: 'utf8', env: env(models) });
const runsOf = (models: string) => join(dir, models, 'runs');
/** The record without its clock times (the only fields two equal runs may differ in). */
const comparable = (models: string, id: string) => {
  const r = JSON.parse(readFileSync(join(runsOf(models), id, 'record.json'), 'utf8'));
  delete r.completed_at;
  r.training_set.file = r.training_set.file.replace(join(dir, models), '');
  return r;
};

beforeAll(async () => {
  await writeEventFile(events, generate({ seed: 5, days: 2, impressionsPerDay: 6000, users: 1200, ads: 100 }));
});

describe('tributary retrain', () => {
  let id: string;

  it('runs backfill -> train -> gate -> promote, and a second run with the same inputs does nothing', () => {
    const r = cli('a', ...retrainArgs);
    expect(r.status, r.stderr).toBe(0);
    for (const step of ['[1/4] backfill done', '[2/4] train    done', '[3/4] gate     done', '[4/4] promote  done'])
      expect(r.stdout).toContain(step);
    id = (/^run {11}(\w+)/m.exec(r.stdout) as RegExpExecArray)[1] as string;
    const record = JSON.parse(readFileSync(join(runsOf('a'), id, 'record.json'), 'utf8'));
    expect(record).toMatchObject({ id, promoted: true, gate: { promote: true, current: null } });
    expect(record.current).toBe(record.version);
    expect(record.training_set.rows).toBeGreaterThan(1000);
    expect(readFileSync(join(dir, 'a', 'CURRENT'), 'utf8').trim()).toBe(record.version);

    const trainingSet = join(runsOf('a'), id, 'training.csv');
    const before = statSync(trainingSet).mtimeMs;
    const runsLog = readFileSync(join(dir, 'a', 'runs.jsonl'), 'utf8');
    const again = cli('a', ...retrainArgs);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toContain(`run ${id} already complete`);
    expect(again.stdout).not.toContain('running');
    expect(statSync(trainingSet).mtimeMs).toBe(before);
    expect(readFileSync(join(dir, 'a', 'runs.jsonl'), 'utf8')).toBe(runsLog);

    const show = JSON.parse(cli('a', 'models', 'show', record.version).stdout);
    expect(show.run.gate.reason).toBe(record.gate.reason);
    expect(show.retrain).toMatchObject({ id, version: record.version, metrics: record.metrics });
    expect(cli('a', 'models', 'runs').stdout).toMatch(
      new RegExp(`${id} .* backfill,train,gate,promote +${record.version} +promoted`),
    );
  }, 60_000);

  it('killed after its backfill, resumes at train without redoing it and ends with the same record', async () => {
    const child = spawn(process.execPath, args(retrainArgs), { env: env('b'), stdio: 'ignore' });
    const state = join(runsOf('b'), id, 'state.json');
    let killedAt: { done: Record<string, string> } | undefined;
    while (child.exitCode === null) {
      if (existsSync(state)) {
        const s = JSON.parse(readFileSync(state, 'utf8'));
        if (s.done.backfill) {
          child.kill('SIGKILL');
          killedAt = s;
          break;
        }
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    await new Promise((r) => child.once('exit', r));
    // Killed between the backfill and the end of training (a run that finished first would test nothing).
    expect(killedAt?.done).toEqual({ backfill: expect.any(String) });
    expect(existsSync(join(dir, 'b', 'CURRENT'))).toBe(false);
    const trainingSet = join(runsOf('b'), id, 'training.csv');
    const before = statSync(trainingSet).mtimeMs;

    const resumed = cli('b', ...retrainArgs);
    expect(resumed.status, resumed.stderr).toBe(0);
    expect(resumed.stdout).toContain('[1/4] backfill done earlier');
    expect(resumed.stdout).not.toContain('[1/4] backfill running');
    expect(resumed.stdout).toContain('[2/4] train    running');
    expect(statSync(trainingSet).mtimeMs).toBe(before);
    expect(comparable('b', id)).toEqual(comparable('a', id));
  }, 60_000);
});
