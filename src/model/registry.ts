// Versioned models on disk with a "current" pointer. Layout:
//   <dir>/<version>/model.onnx, <dir>/<version>/run.json   version = first 12 hex of sha256(model bytes)
//   <dir>/CURRENT        the current version, replaced atomically (temp file + rename): readers see old or new
//   <dir>/history.jsonl  promotions and rollbacks, one line each (rollback returns to the previous current)
//   <dir>/runs.jsonl     the experiment log: one line per training run (params, data range, metrics, version)
import { createHash } from 'node:crypto';
import { appendFile, mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { GateDecision } from './gate.ts';

/** What a training run records beside its model. */
export interface TrainingRun {
  /** When the run happened (kept out of the model bytes, which must be reproducible). */
  trained_at: string;
  training_set: string;
  definitions_version: string;
  params: Record<string, unknown>;
  /** Time ranges (ISO) and sizes of the training and evaluation parts. */
  data: Record<string, { from: string; to: string; rows: number; positives: number }>;
  metrics: Record<string, unknown>;
  seconds: number;
  /** The promotion gate's decision, when the run went through it (`train --promote`, `retrain`). */
  gate?: GateDecision;
  /** The `tributary retrain` run that produced it (its record: <dir>/runs/<id>/record.json). */
  retrain_run?: string;
}

export interface ModelEntry {
  version: string;
  current: boolean;
  run: TrainingRun;
}

interface HistoryLine {
  at: string;
  action: 'promote' | 'rollback';
  version: string;
  previous: string | null;
}

const VERSION = /^[0-9a-f]{12}$/;

export function modelVersion(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex').slice(0, 12);
}

export class ModelRegistryError extends Error {}

/**
 * Told after each change the folder has made (a mirror such as MLflow, src/model/mlflow.ts): a registered model, and
 * the version that became (or stays) current on promote and rollback.
 */
export interface RegistryHooks {
  registered(version: string, bytes: Uint8Array, run: TrainingRun): Promise<void>;
  pointed(version: string, bytes: Uint8Array, run: TrainingRun): Promise<void>;
}

async function readText(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

let writes = 0;

/** Writes a whole file under a temporary name (unique per process and write), then renames it into place. */
async function writeAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.${process.pid}.${writes++}.tmp`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

export class ModelRegistry {
  constructor(
    readonly dir: string,
    private readonly hooks?: RegistryHooks,
  ) {}

  /** Stores the model under its content version (idempotent) and logs the run; returns the version. */
  async register(bytes: Uint8Array, run: TrainingRun): Promise<string> {
    const version = modelVersion(bytes);
    const home = join(this.dir, version);
    await mkdir(home, { recursive: true });
    await writeAtomic(join(home, 'run.json'), `${JSON.stringify(run, null, 2)}\n`);
    await writeAtomic(join(home, 'model.onnx'), bytes);
    await appendFile(join(this.dir, 'runs.jsonl'), `${JSON.stringify({ version, ...run })}\n`);
    const hooks = this.hooks;
    if (hooks) await this.told(`model ${version} is registered`, () => hooks.registered(version, bytes, run));
    return version;
  }

  /** Registered models, oldest run first. */
  async list(): Promise<ModelEntry[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const current = await this.current();
    const entries: ModelEntry[] = [];
    for (const version of names.filter((n) => VERSION.test(n))) {
      const run = await readText(join(this.dir, version, 'run.json'));
      if (run !== null) entries.push({ version, current: version === current, run: JSON.parse(run) as TrainingRun });
    }
    return entries.sort(
      (a, b) => a.run.trained_at.localeCompare(b.run.trained_at) || a.version.localeCompare(b.version),
    );
  }

  async current(): Promise<string | null> {
    const v = (await readText(join(this.dir, 'CURRENT')))?.trim();
    return v || null;
  }

  async read(version: string): Promise<Uint8Array> {
    this.checkVersion(version);
    const path = join(this.dir, version, 'model.onnx');
    try {
      return new Uint8Array(await readFile(path));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        throw new ModelRegistryError(`no model ${version} in ${this.dir}`);
      throw err;
    }
  }

  async promote(version: string): Promise<void> {
    await this.read(version); // exists and is readable
    if ((await this.current()) !== version) await this.point(version, 'promote');
    // Also when it already was current: a promote repeated after a mirror failed brings the mirror up to date.
    await this.announce(version);
  }

  /** Makes the model that was current before the current one current again; returns its version. */
  async rollback(): Promise<string> {
    const stack = await this.promotions();
    stack.pop();
    const previous = stack.at(-1);
    if (previous === undefined) throw new ModelRegistryError('nothing to roll back to: no earlier promotion');
    await this.point(previous, 'rollback');
    await this.announce(previous);
    return previous;
  }

  /** Current versions in promotion order, with rolled-back ones removed: the last one is current. */
  private async promotions(): Promise<string[]> {
    const text = (await readText(join(this.dir, 'history.jsonl'))) ?? '';
    const stack: string[] = [];
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      const h = JSON.parse(line) as HistoryLine;
      if (h.action === 'promote') stack.push(h.version);
      else stack.pop();
    }
    return stack;
  }

  private async point(version: string, action: HistoryLine['action']): Promise<void> {
    const previous = await this.current();
    await mkdir(this.dir, { recursive: true });
    await writeAtomic(join(this.dir, 'CURRENT'), `${version}\n`);
    const line: HistoryLine = { at: new Date().toISOString(), action, version, previous };
    await appendFile(join(this.dir, 'history.jsonl'), `${JSON.stringify(line)}\n`);
  }

  private async announce(version: string): Promise<void> {
    const hooks = this.hooks;
    if (!hooks) return;
    const run = await readText(join(this.dir, version, 'run.json'));
    if (run === null) throw new ModelRegistryError(`model ${version} in ${this.dir} has no run.json`);
    const bytes = await this.read(version);
    await this.told(`${version} is current`, () => hooks.pointed(version, bytes, JSON.parse(run) as TrainingRun));
  }

  /** A mirror's failure names what the folder already holds (the source of truth) before the mirror's reason. */
  private async told(done: string, tell: () => Promise<void>): Promise<void> {
    try {
      await tell();
    } catch (err) {
      if (err instanceof Error) err.message = `${done} in ${this.dir}, but ${err.message}`;
      throw err;
    }
  }

  private checkVersion(version: string): void {
    if (!VERSION.test(version))
      throw new ModelRegistryError(`"${version}" is not a model version (12 hex characters, see \`models list\`)`);
  }
}
