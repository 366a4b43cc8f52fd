// MLflow when configured, against a real `mlflow server` (scripts/services/mlflow.sh: SQLite, local artifacts):
// `tributary train` logs the run (params, metrics, calibration, contract, the ONNX file) and registers the version;
// promote and rollback move the champion alias. Without --mlflow nothing reaches MLflow; unreachable is exit 3.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate } from '../../src/events/generator.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { readContract } from '../../src/model/contract.ts';
import { startLocalServers } from '../support/global-setup.ts';
import { replayRecords, trainingSetOf } from '../support/models.ts';
import { freePort, MLFLOW_URL } from '../support/services.ts';

const env = { ...process.env };
delete env.TRIBUTARY_MLFLOW_URL;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** `tributary ...args` as a process; resolves whatever the exit code. */
async function tributary(...args: string[]): Promise<Result> {
  try {
    const r = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { env });
    return { code: 0, ...r };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function api<T>(endpoint: string, query: Record<string, string>): Promise<T> {
  const res = await fetch(`${MLFLOW_URL}/api/2.0/mlflow/${endpoint}?${new URLSearchParams(query)}`);
  const body = await res.json();
  if (!res.ok) throw new Error(`${endpoint}: ${JSON.stringify(body)}`);
  return body as T;
}

type KeyValue = { key: string; value: string };
interface Run {
  info: { run_id: string; artifact_uri: string; status: string };
  data: { params: KeyValue[]; metrics: { key: string; value: number }[]; tags: KeyValue[] };
}
interface Version {
  version: string;
  run_id: string;
  tags: KeyValue[];
  aliases?: string[];
}
const tag = (tags: KeyValue[], key: string) => tags.find((t) => t.key === key)?.value;

const features = new FeatureSet(DEFAULT_GROUPS);
const ns = `mlflowtest${Date.now().toString(36)}_`;
let stopMlflow: () => Promise<void> = async () => {};
let trainingSet: string;
let models: string;

async function champion(namespace: string): Promise<Version> {
  const r = await api<{ model_version: Version }>('registered-models/alias', {
    name: `${namespace}tributary-ctr`,
    alias: 'champion',
  });
  return r.model_version;
}

describe('MLflow', () => {
  beforeAll(async () => {
    // The first install downloads mlflow from PyPI (.ci/run installs it before the tests).
    stopMlflow = await startLocalServers(['mlflow']);
    const log = generate({ seed: 19, days: 1, impressionsPerDay: 1500, candidatesPerRequest: 4 });
    trainingSet = await trainingSetOf(features, replayRecords(log));
    models = await mkdtemp(join(tmpdir(), 'tributary-mlflow-'));
  }, 300_000);
  afterAll(() => stopMlflow());

  it('mirrors training runs, versions and the champion alias; promote and rollback move the alias', {
    timeout: 120_000,
  }, async () => {
    const common = ['--namespace', ns, '--models', models, '--mlflow', MLFLOW_URL];
    const first = await tributary('train', '--training-set', trainingSet, '--promote', ...common);
    expect(first.code, first.stderr).toBe(0);
    const v1 = /model ([0-9a-f]{12}) registered .*; now current/.exec(first.stdout)?.[1] as string;
    expect(first.stdout).toContain(`version of model "${ns}tributary-ctr" (alias champion)`);
    const second = await tributary('train', '--training-set', trainingSet, '--l2', '1', ...common);
    expect(second.code, second.stderr).toBe(0);
    const v2 = /model ([0-9a-f]{12}) registered .*; current stays/.exec(second.stdout)?.[1] as string;
    expect(v2).toMatch(/^[0-9a-f]{12}$/);

    // The runs: parameters, metrics equal to the folder's run record, the contract, the model file itself.
    const { experiment } = await api<{ experiment: { experiment_id: string } }>('experiments/get-by-name', {
      experiment_name: `${ns}tributary`,
    });
    const res = await fetch(`${MLFLOW_URL}/api/2.0/mlflow/runs/search`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ experiment_ids: [experiment.experiment_id] }),
    });
    const { runs } = (await res.json()) as { runs: Run[] };
    expect(runs.map((r) => tag(r.data.tags, 'tributary.version')).sort()).toEqual([v1, v2].sort());
    const run = runs.find((r) => tag(r.data.tags, 'tributary.version') === v1) as Run;
    const local = JSON.parse(readFileSync(join(models, v1, 'run.json'), 'utf8'));
    const bytes = readFileSync(join(models, v1, 'model.onnx'));
    const contract = readContract(bytes);
    expect(run.info.status).toBe('FINISHED');
    expect(Object.fromEntries(run.data.params.map((p) => [p.key, p.value]))).toMatchObject({
      model: 'logistic_regression',
      l2: '0.01',
      eval_fraction: '0.2',
      definitions_version: features.version,
      'data.eval.rows': String(local.data.eval.rows),
    });
    const metric = (key: string) => run.data.metrics.find((m) => m.key === key)?.value;
    expect(metric('auc')).toBeCloseTo(local.metrics.auc, 12);
    expect(metric('logloss')).toBeCloseTo(local.metrics.logloss, 12);
    expect(metric('baseline_auc')).toBeCloseTo(local.metrics.baseline_auc, 12);
    expect(metric('auc_lift_ci95_low')).toBeCloseTo(local.metrics.auc_lift_ci95[0], 12);
    expect(JSON.parse(tag(run.data.tags, 'tributary.features') ?? '[]')).toEqual(features.names);
    expect(tag(run.data.tags, 'tributary.definitions_version')).toBe(features.version);
    const artifacts = `${MLFLOW_URL}/api/2.0/mlflow-artifacts/artifacts/${run.info.artifact_uri.replace(/^mlflow-artifacts:\/*/, '')}`;
    const served = new Uint8Array(await (await fetch(`${artifacts}/model/model.onnx`)).arrayBuffer());
    expect(Buffer.from(served).equals(bytes)).toBe(true);
    const calibration = (await (await fetch(`${artifacts}/calibration.json`)).json()) as Record<string, unknown>;
    expect(calibration.calibration).toEqual(local.metrics.calibration);
    const servedContract = (await (await fetch(`${artifacts}/contract.json`)).json()) as { features: string[] };
    expect(servedContract.features).toEqual(contract.features);

    // The registered model: one version per registry version, linked to its run; the champion is v1.
    const { model_versions } = await api<{ model_versions: Version[] }>('model-versions/search', {
      filter: `name='${ns}tributary-ctr'`,
    });
    expect(model_versions.map((v) => tag(v.tags, 'tributary.version')).sort()).toEqual([v1, v2].sort());
    expect(model_versions.find((v) => tag(v.tags, 'tributary.version') === v1)?.run_id).toBe(run.info.run_id);
    expect(tag((await champion(ns)).tags, 'tributary.version')).toBe(v1);

    const promoted = await tributary('models', 'promote', v2, ...common);
    expect(promoted.code, promoted.stderr).toBe(0);
    expect(tag((await champion(ns)).tags, 'tributary.version')).toBe(v2);
    const rolledBack = await tributary('models', 'rollback', ...common);
    expect(rolledBack.stdout.trim()).toBe(`current: ${v1} (was ${v2})`);
    expect(tag((await champion(ns)).tags, 'tributary.version')).toBe(v1);
    // Training the same data again gives the same model: a second run, not a second version.
    const again = await tributary('train', '--training-set', trainingSet, ...common);
    expect(again.code, again.stderr).toBe(0);
    const after = await api<{ model_versions: Version[] }>('model-versions/search', {
      filter: `name='${ns}tributary-ctr'`,
    });
    expect(after.model_versions).toHaveLength(2);
  });

  it('without --mlflow contacts nothing; a model registered then appears on its first promote with --mlflow', {
    timeout: 60_000,
  }, async () => {
    const plain = `${ns}plain_`;
    const dir = await mkdtemp(join(tmpdir(), 'tributary-mlflow-plain-'));
    const r = await tributary('train', '--training-set', trainingSet, '--namespace', plain, '--models', dir);
    expect(r.code, r.stderr).toBe(0);
    const version = /model ([0-9a-f]{12}) registered/.exec(r.stdout)?.[1] as string;
    await expect(api('experiments/get-by-name', { experiment_name: `${plain}tributary` })).rejects.toThrow(
      /RESOURCE_DOES_NOT_EXIST/,
    );
    const promoted = await tributary(
      'models',
      'promote',
      version,
      '--namespace',
      plain,
      '--models',
      dir,
      '--mlflow',
      MLFLOW_URL,
    );
    expect(promoted.code, promoted.stderr).toBe(0);
    expect(tag((await champion(plain)).tags, 'tributary.version')).toBe(version);
  });

  it('an unreachable MLflow stops train before anything is registered: exit 3, says so', {
    timeout: 60_000,
  }, async () => {
    const dir = join(await mkdtemp(join(tmpdir(), 'tributary-mlflow-down-')), 'models');
    const nowhere = `http://127.0.0.1:${await freePort()}`;
    const r = await tributary('train', '--training-set', trainingSet, '--models', dir, '--mlflow', nowhere);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(
      new RegExp(`^tributary: MLflow not reachable at ${nowhere}/: run \`tributary services start mlflow\``),
    );
    expect(existsSync(dir) ? readdirSync(dir) : []).toEqual([]);
  });
});
