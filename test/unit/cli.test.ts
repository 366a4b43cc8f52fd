// The command line as a user meets it: the demo runs with no servers; mistakes get one line and a usable exit code.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const cli = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    encoding: 'utf8',
    env: { ...process.env, TRIBUTARY_KAFKA: '', TRIBUTARY_VALKEY: '', TRIBUTARY_SCHEMA_REGISTRY: '' },
  });
const demoDir = mkdtempSync(join(tmpdir(), 'cli-demo-'));

describe('tributary CLI', () => {
  it('runs the demo on embedded defaults and reports a training set', { timeout: 60_000 }, () => {
    const r = cli('demo', '--out', demoDir);
    expect(r.status, r.stderr).toBe(0);
    const rows = Number(/training set: (\d+) rows/.exec(r.stdout)?.[1]);
    expect(rows).toBeGreaterThan(10_000);
    expect(r.stdout).toMatch(/replayed through 58 features/);
  });

  it('answers a configuration mistake with one line and exit 2, an unknown flag likewise', { timeout: 30_000 }, () => {
    const noKafka = cli('stream');
    expect(noKafka.status).toBe(2);
    expect(noKafka.stderr.trim()).toBe('tributary: stream needs Kafka: pass --kafka host:port');
    const badUrl = cli('--schema-registry', 'localhost:8081', 'config');
    expect(badUrl.status).toBe(2);
    expect(badUrl.stderr).toMatch(/schemaRegistry must be an http\(s\) URL/);
    expect(cli('generate', '--no-such-flag').status).toBe(2);
  });

  it('trains on the demo training set, registers, lists, promotes and rolls back', { timeout: 120_000 }, () => {
    const models = join(demoDir, 'models');
    const trainHere = (...args: string[]) =>
      cli('train', '--training-set', join(demoDir, 'training.csv'), '--models', models, ...args);
    const first = trainHere();
    expect(first.status, first.stderr).toBe(0);
    const auc = /^AUC\s+([\d.]+)\s+([\d.]+)/m.exec(first.stdout);
    expect(Number(auc?.[1])).toBeGreaterThan(Number(auc?.[2])); // model above the ad-CTR baseline
    expect(first.stdout).toMatch(/calibration on the evaluation rows/);
    const v1 = /model ([0-9a-f]{12}) registered .*; now current/.exec(first.stdout)?.[1] as string;
    const second = trainHere('--l2', '1');
    const v2 = /model ([0-9a-f]{12}) registered .*; current stays/.exec(second.stdout)?.[1] as string;
    expect(v2).toMatch(/^[0-9a-f]{12}$/);
    expect(cli('models', 'list', '--models', models).stdout).toMatch(new RegExp(`\\* ${v1}.*\\n  ${v2}`));
    expect(cli('models', 'promote', v2, '--models', models).stdout.trim()).toBe(`current: ${v2} (was ${v1})`);
    expect(readFileSync(join(models, 'CURRENT'), 'utf8')).toBe(`${v2}\n`);
    expect(cli('models', 'rollback', '--models', models).stdout.trim()).toBe(`current: ${v1} (was ${v2})`);
    const shown = JSON.parse(cli('models', 'show', v1, '--models', models).stdout);
    expect(shown.contract.features).toHaveLength(58);
    expect(shown.run.params.l2).toBe(0.01);

    const missing = cli('train', '--training-set', join(demoDir, 'nope.csv'), '--models', models);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/^tributary: cannot read .*nope\.csv\.meta\.json/);
  });
});
