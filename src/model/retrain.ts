// `tributary retrain`'s core: backfill -> train -> gate -> promote as one job with a run folder,
// <models>/runs/<id>/, holding each step's output and state.json (the steps done so far). A run killed at any
// point resumes at the step it was in (the backfill itself from its checkpoint); a completed run is a no-op that
// returns its record. The id is a hash of the inputs (the history included: a file's size and time, the day for
// the stream's offline store), so the same history and parameters name the same run. It reuses runBackfill and train; it adds no second implementation of either.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ReplayRecord } from '../backfill/replay.ts';
import { runBackfill } from '../backfill/run.ts';
import type { TrainingMeta } from '../backfill/training-set.ts';
import type { FeatureSet } from '../features/compile.ts';
import { type GateDecision, judge, registerDecided } from './gate.ts';
import { type ModelRegistry, modelVersion, type TrainingRun } from './registry.ts';
import { train } from './train.ts';
import { readTrainingSet, splitByTime } from './training-data.ts';

export const STEPS = ['backfill', 'train', 'gate', 'promote'] as const;
export type Step = (typeof STEPS)[number];

/** What a run depends on: the same inputs, the same run (and id). */
export interface RetrainInputs {
  source: string;
  /** The history the run covers: a file's size and time, or the UTC day for the offline store. */
  history: unknown;
  definitions_version: string;
  attribution_ms: number;
  allowed_lateness_ms: number;
  from: string | null;
  to: string | null;
  params: { l2: number; eval_fraction: number; seed: number };
}

/** What `models show` and `models runs` print for a run. */
export interface RetrainRecord {
  id: string;
  inputs: RetrainInputs;
  training_set: { file: string; rows: number; positives: number; first: string | null; last: string | null };
  version: string;
  metrics: {
    auc: number;
    logloss: number;
    baseline_auc: number;
    baseline_logloss: number;
    mean_pctr: number;
    eval_ctr: number;
  };
  gate: GateDecision;
  promoted: boolean;
  /** The current version when the run ended. */
  current: string | null;
  completed_at: string;
}

interface State {
  id: string;
  inputs: RetrainInputs;
  started_at: string;
  /** Completion time of each finished step. */
  done: Partial<Record<Step, string>>;
  backfill?: TrainingMeta;
  gate?: GateDecision;
  record?: RetrainRecord;
}

export function retrainId(inputs: RetrainInputs): string {
  return createHash('sha256').update(JSON.stringify(inputs)).digest('hex').slice(0, 16);
}

/** The folder of a run's steps and state. */
export function runDir(registry: ModelRegistry, id: string): string {
  return join(registry.dir, 'runs', id);
}

export type StepEvent = 'start' | 'resume' | 'done' | 'kept';

export interface RetrainOptions {
  registry: ModelRegistry;
  features: FeatureSet;
  inputs: RetrainInputs;
  /** Given id (default: retrainId(inputs)). */
  id?: string;
  /** The backfill's source, opened only when the backfill step runs. */
  openSource: () => Promise<{ open: () => AsyncIterable<ReplayRecord>; partitions?: number }>;
  force?: boolean;
  checkpointEvery?: number;
  onStep?: (step: Step, event: StepEvent, detail?: string) => void;
  onProgress?: (events: number) => void;
}

async function saveState(path: string, s: State): Promise<void> {
  await writeFile(`${path}.tmp`, `${JSON.stringify(s, null, 2)}\n`);
  await rename(`${path}.tmp`, path);
}

/** A run's record, or undefined if it has not completed (or does not exist). */
export async function readRecord(registry: ModelRegistry, id: string): Promise<RetrainRecord | undefined> {
  const path = join(runDir(registry, id), 'state.json');
  if (!existsSync(path)) return undefined;
  return (JSON.parse(await readFile(path, 'utf8')) as State).record;
}

/** Every run folder's state: id, steps done, record when complete; oldest first. */
export async function listRuns(
  registry: ModelRegistry,
): Promise<{ id: string; started_at: string; done: Step[]; record?: RetrainRecord }[]> {
  const root = join(registry.dir, 'runs');
  if (!existsSync(root)) return [];
  const out = [];
  for (const id of await readdir(root)) {
    const path = join(root, id, 'state.json');
    if (!existsSync(path)) continue;
    const s = JSON.parse(await readFile(path, 'utf8')) as State;
    out.push({ id, started_at: s.started_at, done: STEPS.filter((k) => s.done[k]), record: s.record });
  }
  return out.sort((a, b) => a.started_at.localeCompare(b.started_at) || a.id.localeCompare(b.id));
}

/** Runs (or resumes, or just returns) the retrain run for these inputs. `fresh` is false for a completed run. */
export async function runRetrain(o: RetrainOptions): Promise<{ record: RetrainRecord; fresh: boolean }> {
  const id = o.id ?? retrainId(o.inputs);
  const dir = runDir(o.registry, id);
  const statePath = join(dir, 'state.json');
  await mkdir(dir, { recursive: true });
  let state: State;
  if (existsSync(statePath)) {
    state = JSON.parse(await readFile(statePath, 'utf8')) as State;
    if (JSON.stringify(state.inputs) !== JSON.stringify(o.inputs))
      throw new Error(`run ${id} in ${dir} was started with other inputs: choose another --run-id`);
    if (state.record) return { record: state.record, fresh: false };
  } else {
    state = { id, inputs: o.inputs, started_at: new Date().toISOString(), done: {} };
    await saveState(statePath, state);
  }
  const step = async (name: Step, work: () => Promise<void>, detail: () => string) => {
    if (state.done[name]) {
      o.onStep?.(name, 'kept', detail());
      return;
    }
    o.onStep?.(name, 'start');
    await work();
    state.done[name] = new Date().toISOString();
    await saveState(statePath, state);
    o.onStep?.(name, 'done', detail());
  };

  const trainingSet = join(dir, 'training.csv');
  const { inputs } = o;
  const iso = (t: string | null) => (t === null ? undefined : Date.parse(t));
  await step(
    'backfill',
    async () => {
      const source = await o.openSource();
      state.backfill = await runBackfill({
        features: o.features,
        open: source.open,
        partitions: source.partitions,
        sourceName: inputs.source,
        out: trainingSet,
        attributionMs: inputs.attribution_ms,
        allowedLatenessMs: inputs.allowed_lateness_ms,
        from: iso(inputs.from),
        to: iso(inputs.to),
        checkpointEvery: o.checkpointEvery,
        onResume: (events) => o.onStep?.('backfill', 'resume', `from its checkpoint at ${events} events`),
        onProgress: o.onProgress,
      });
    },
    () => `${state.backfill?.rows} rows, ${state.backfill?.positives} clicks`,
  );

  // The trained model and its run record are kept in the run folder, so a resumed run judges the same bytes.
  const modelPath = join(dir, 'model.onnx');
  const trainPath = join(dir, 'train.json');
  const { l2, eval_fraction: evalFraction, seed } = inputs.params;
  await step(
    'train',
    async () => {
      const r = await train({ trainingSet, features: o.features, evalFraction, l2, seed });
      await writeFile(`${modelPath}.tmp`, r.bytes);
      await rename(`${modelPath}.tmp`, modelPath);
      await writeFile(`${trainPath}.tmp`, `${JSON.stringify({ ...r.run, retrain_run: id }, null, 2)}\n`);
      await rename(`${trainPath}.tmp`, trainPath);
    },
    () => `model in ${modelPath}`,
  );
  const bytes = new Uint8Array(await readFile(modelPath));
  const run = JSON.parse(await readFile(trainPath, 'utf8')) as TrainingRun;
  const version = modelVersion(bytes);

  await step(
    'gate',
    async () => {
      // The evaluation rows again, by the same split train made.
      const { evaluation } = splitByTime(await readTrainingSet(trainingSet), evalFraction);
      state.gate = await judge(o.registry, { bytes, evaluation }, o.features, o.force);
    },
    () =>
      `${state.gate?.promote ? (state.gate.forced ? 'promote (forced)' : 'promote') : 'hold'}: ${state.gate?.reason}`,
  );
  const gate = state.gate as GateDecision;

  await step(
    'promote',
    async () => {
      await registerDecided(o.registry, bytes, run, gate);
    },
    () => (gate.promote ? `${version} is current` : `${version} registered, not promoted`),
  );
  const m = run.metrics as RetrainRecord['metrics'];
  const b = state.backfill as TrainingMeta;
  state.record = {
    id,
    inputs,
    training_set: {
      file: trainingSet,
      rows: b.rows,
      positives: b.positives,
      first: b.first_event_time,
      last: b.last_event_time,
    },
    version,
    metrics: {
      auc: m.auc,
      logloss: m.logloss,
      baseline_auc: m.baseline_auc,
      baseline_logloss: m.baseline_logloss,
      mean_pctr: m.mean_pctr,
      eval_ctr: m.eval_ctr,
    },
    gate,
    promoted: gate.promote,
    current: await o.registry.current(),
    completed_at: new Date().toISOString(),
  };
  await saveState(statePath, state);
  await writeFile(join(dir, 'record.json'), `${JSON.stringify(state.record, null, 2)}\n`);
  return { record: state.record, fresh: true };
}
