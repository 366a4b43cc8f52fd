// Runs examples/lightgbm/train.py (a LightGBM model trained in Python on a Parquet training set, exported to ONNX
// with the feature contract) in the venv examples/lightgbm/make-venv.sh makes: for the demo's report and the tests.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { FeatureSet } from '../features/compile.ts';
import type { ModelRegistry } from '../model/registry.ts';
import type { Part } from '../model/training-data.ts';
import { evaluateModel, type ModelEvaluation } from '../scoring/evaluate-model.ts';
import { registerModel } from '../scoring/register-model.ts';

const run = promisify(execFile);

export const EXAMPLE_DIR = resolve(import.meta.dirname, '../../examples/lightgbm');

/** What the example prints: its own evaluation of the LightGBM model on its held-out rows. */
export interface LightgbmReport {
  auc: number;
  logloss: number;
  rows: number;
  eval_rows: number;
  model: string;
  definitions_version: string;
}

/** The venv's python when make-venv.sh has built it (TRIBUTARY_PYTHON_VENV, else its default folder), else null. */
export function lightgbmPython(env: NodeJS.ProcessEnv = process.env): string | null {
  const venv = env.TRIBUTARY_PYTHON_VENV ?? join(homedir(), '.cache/tributary/python/lightgbm');
  const python = join(venv, 'bin/python');
  return existsSync(python) && existsSync(join(venv, '.requirements.sha256')) ? python : null;
}

/** Builds (or reuses) the venv with the pinned packages from PyPI; returns its python. */
export async function makeLightgbmVenv(): Promise<string> {
  const { stdout } = await run('bash', [join(EXAMPLE_DIR, 'make-venv.sh')], { maxBuffer: 1 << 20 });
  return stdout.trim().split('\n').at(-1) as string;
}

/** Trains and exports the model to `out`; throws with the script's last error line if it fails. */
export async function runLightgbmExample(
  python: string,
  trainingSet: string,
  out: string,
  evalFraction = 0.2,
): Promise<LightgbmReport> {
  const args = [join(EXAMPLE_DIR, 'train.py'), '--training-set', trainingSet, '--out', out];
  try {
    const { stdout } = await run(python, [...args, '--eval-fraction', String(evalFraction)], { maxBuffer: 1 << 20 });
    return JSON.parse(stdout.trim().split('\n').at(-1) as string) as LightgbmReport;
  } catch (err) {
    const stderr = String((err as { stderr?: string }).stderr ?? '').trim();
    throw new Error(`examples/lightgbm/train.py failed: ${stderr.split('\n').at(-1) || (err as Error).message}`);
  }
}

export interface LightgbmComparison {
  /** The LightGBM model's version in the registry (registered, not promoted). */
  version: string;
  lightgbm: ModelEvaluation;
  builtIn: ModelEvaluation;
}

/**
 * Trains the example on `parquet`, registers the model (smoke-tested, not promoted) and scores it and the built-in
 * model (`builtIn` bytes) on the same held-out rows (`train`'s evaluation part).
 */
export async function compareWithLightgbm(o: {
  python: string;
  parquet: string;
  out: string;
  registry: ModelRegistry;
  features: FeatureSet;
  builtIn: Uint8Array;
  heldOut: Part;
}): Promise<LightgbmComparison> {
  await runLightgbmExample(o.python, o.parquet, o.out);
  const bytes = new Uint8Array(await readFile(o.out));
  const { version } = await registerModel(o.registry, bytes, o.out, o.features);
  const [lightgbm, builtIn] = await Promise.all([
    evaluateModel(bytes, o.features, o.heldOut),
    evaluateModel(o.builtIn, o.features, o.heldOut),
  ]);
  return { version, lightgbm, builtIn };
}
