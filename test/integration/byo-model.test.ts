// Bring your own model, end to end on embedded defaults: generated traffic -> `tributary backfill` (Parquet and CSV,
// the same rows) -> examples/lightgbm/train.py in a venv of PyPI packages -> `tributary models register` -> /v1/rank
// serves the tree model. The tree model and the built-in logistic regression are scored on the same held-out rows.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { lightgbmPython, makeLightgbmVenv, runLightgbmExample } from '../../src/cli/lightgbm-example.ts';
import { modelWeights } from '../../src/console/models.ts';
import { generate } from '../../src/events/generator.ts';
import type { AdImpression } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { META, ModelContractError } from '../../src/model/contract.ts';
import { ModelRegistry } from '../../src/model/registry.ts';
import { type TrainResult, train } from '../../src/model/train.ts';
import { MemoryStore } from '../../src/online/memory-store.ts';
import { evaluateModel } from '../../src/scoring/evaluate-model.ts';
import { ScoringMetrics } from '../../src/scoring/metrics.ts';
import { ModelRuntime } from '../../src/scoring/model-runtime.ts';
import { Ranker } from '../../src/scoring/ranker.ts';
import { buildServer } from '../../src/scoring/server.ts';
import { smokePrediction } from '../../src/scoring/smoke-prediction.ts';
import { embeddedEnv } from '../support/services.ts';

const { onnx } = onnxProto;
const dir = mkdtempSync(join(tmpdir(), 'tributary-byom-'));
const models = join(dir, 'models');
const env = embeddedEnv({
  TRIBUTARY_CLICKHOUSE_DIR: join(dir, 'clickhouse'),
  TRIBUTARY_MODELS_DIR: models,
});

function cli(...a: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...a], { env });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => {
      stdout += d;
    });
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const features = new FeatureSet(DEFAULT_GROUPS);
let builtIn: TrainResult;
let report: Awaited<ReturnType<typeof runLightgbmExample>>;
let tree: Uint8Array;

/** The tree model with its ONNX proto changed by `edit`. */
function edited(edit: (m: onnxProto.onnx.ModelProto) => void): Uint8Array {
  const m = onnx.ModelProto.decode(tree);
  edit(m);
  return onnx.ModelProto.encode(m).finish();
}

async function refusal(bytes: Uint8Array): Promise<string> {
  try {
    await smokePrediction(bytes, features);
  } catch (err) {
    expect(err).toBeInstanceOf(ModelContractError);
    return (err as Error).message;
  }
  throw new Error('the model was accepted');
}

describe('bring your own model (examples/lightgbm)', () => {
  beforeAll(async () => {
    // make-venv.sh installs the pinned packages once; reruns find them (and pip's cache makes a rebuild quick).
    const python = lightgbmPython() ?? (await makeLightgbmVenv());
    const events = join(dir, 'events.cols');
    const gen = await cli('generate', '--days', '2', '--impressions-per-day', '15000', '--out', events);
    expect(gen.status, gen.stderr).toBe(0);
    const [parquet, csv] = await Promise.all([
      cli('backfill', '--source', `file:${events}`, '--out', join(dir, 'train.parquet')),
      cli('backfill', '--source', `file:${events}`, '--out', join(dir, 'train.csv')),
    ]);
    expect(parquet.status, parquet.stderr).toBe(0);
    expect(csv.status, csv.stderr).toBe(0);
    [report, builtIn] = await Promise.all([
      runLightgbmExample(python, join(dir, 'train.parquet'), join(dir, 'lightgbm.onnx')),
      train({ trainingSet: join(dir, 'train.csv'), features, evalFraction: 0.2, l2: 0.01, seed: 1 }),
    ]);
    tree = new Uint8Array(readFileSync(join(dir, 'lightgbm.onnx')));
  }, 300_000);

  it('scores the tree model beside the built-in one on the same held-out rows', async () => {
    const [treeEval, builtInEval] = await Promise.all([
      evaluateModel(tree, features, builtIn.evaluation),
      evaluateModel(builtIn.bytes, features, builtIn.evaluation),
    ]);
    console.log(
      `held-out rows ${treeEval.rows}: LightGBM AUC ${treeEval.auc.toFixed(4)} log loss ${treeEval.logloss.toFixed(5)}` +
        ` | built-in logistic AUC ${builtInEval.auc.toFixed(4)} log loss ${builtInEval.logloss.toFixed(5)}` +
        ` | baseline AUC ${builtIn.metrics.baseline_auc.toFixed(4)} | Python's own figures: ${JSON.stringify(report)}`,
    );
    // The same rows: Python split the Parquet file by `train`'s rule and got the held-out part `train` evaluated on
    // the CSV; its figures (LightGBM itself, float64) agree with the exported ONNX model's on those rows.
    expect(report.eval_rows).toBe(builtIn.metrics.eval_rows);
    expect(report.definitions_version).toBe(features.version);
    expect(Math.abs(report.auc - treeEval.auc)).toBeLessThan(0.005);
    expect(Math.abs(report.logloss - treeEval.logloss)).toBeLessThan(0.001);
    // The built-in model through the scorer's path agrees with `train`'s own evaluation (float32 vs float64).
    expect(Math.abs(builtInEval.auc - builtIn.metrics.auc)).toBeLessThan(1e-3);
    expect(treeEval.auc).toBeGreaterThan(0.5);
    // Better than predicting the observed click rate for every row would be is too strict for a small sample; a
    // sane probability model stays near it.
    expect(treeEval.logloss).toBeLessThan(builtIn.metrics.baseline_logloss * 1.1);
  });

  it('`models register` accepts it, and /v1/rank serves it', async () => {
    const r = await cli('models', 'register', join(dir, 'lightgbm.onnx'), '--promote');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/contract ok: 58 features, definitions \w+, output "probabilities"/);
    expect(r.stdout).toMatch(/smoke prediction ok: 8 rows/);
    const registry = new ModelRegistry(models);
    const version = await registry.current();
    expect(r.stdout).toContain(`model ${version} registered`);
    const entry = (await registry.list()).find((e) => e.version === version);
    // The console's Models page: a tree model has no per-feature weights, said as such (not an error).
    expect(await modelWeights(registry, version as string)).toMatchObject({ weights: [], note: /a lightgbm model/ });
    expect(entry?.run.params.model).toBe('lightgbm');
    expect(entry?.run.metrics.auc).toBe(report.auc);

    const log = pino({ level: 'silent' });
    const metrics = new ScoringMetrics();
    const runtime = new ModelRuntime(registry, features, metrics, log);
    await runtime.start();
    const ranker = new Ranker(
      { features, reader: new MemoryStore(features), models: runtime, metrics, log },
      { readTimeoutMs: 1000 },
    );
    const app = await buildServer(
      { ranker, models: runtime, storeProblem: () => null, metrics, log },
      { maxCandidates: 50, bodyLimit: 64 * 1024 },
    );
    try {
      const ads = generate({ seed: 3, days: 1, impressionsPerDay: 200 })
        .filter((l) => l.record.kind === 'impression')
        .slice(0, 5)
        .map((l) => l.record.event as AdImpression);
      const at = ads[0] as AdImpression;
      const res = await app.inject({
        method: 'POST',
        url: '/v1/rank',
        payload: {
          request_id: 'byom-1',
          user_id: at.user_id,
          publisher_id: at.publisher_id,
          device: at.device,
          os: at.os,
          candidates: ads.map((a) => ({
            ad_id: a.ad_id,
            campaign_id: a.campaign_id,
            advertiser_id: a.advertiser_id,
            category: a.category,
            bid: a.bid,
          })),
        },
      });
      expect(res.statusCode, res.body).toBe(200);
      const body = res.json() as { model_version: string; ranked: { pctr: number }[] };
      expect(body.model_version).toBe(version);
      expect(body.ranked).toHaveLength(5);
      for (const c of body.ranked) expect(c.pctr > 0 && c.pctr < 1).toBe(true);
    } finally {
      await app.close();
      await runtime.stop();
    }
  });

  it('refuses a model with the wrong feature order, missing metadata, a wrong input width or a ZipMap', async () => {
    const props = (m: onnxProto.onnx.ModelProto) => new Map(m.metadataProps.map((p) => [p.key, p]));
    const swapped = [...features.names];
    [swapped[0], swapped[1]] = [swapped[1] as string, swapped[0] as string];
    expect(
      await refusal(
        edited((m) => {
          (props(m).get(META.features) as onnxProto.onnx.StringStringEntryProto).value = JSON.stringify(swapped);
        }),
      ),
    ).toMatch(/reordered features: column 0 is "ad__impressions_1h", the definitions have "ad__impressions_5m"/);
    expect(
      await refusal(
        edited((m) => {
          m.metadataProps = m.metadataProps.filter((p) => p.key !== META.definitionsVersion);
        }),
      ),
    ).toMatch(/model metadata lacks tributary.definitions_version/);
    expect(
      await refusal(
        edited((m) => {
          const dim = m.graph?.input?.[0]?.type?.tensorType?.shape
            ?.dim?.[1] as onnxProto.onnx.TensorShapeProto.Dimension;
          dim.dimValue = features.names.length - 1;
        }),
      ),
    ).toMatch(/model input "features" has 57 columns but its metadata lists 58 features/);
    expect(
      await refusal(
        edited((m) => {
          const out = m.graph?.output?.find((o) => o.name === 'probabilities') as onnxProto.onnx.ValueInfoProto;
          out.type = onnx.TypeProto.create({
            sequenceType: { elemType: { mapType: { keyType: 7, valueType: { tensorType: { elemType: 1 } } } } },
          });
        }),
      ),
    ).toMatch(/model output "probabilities" is a ZipMap.*zipmap off/);

    // On the command line: exit 2 and the reason in one line; nothing registered.
    const bad = join(dir, 'unversioned.onnx');
    writeFileSync(
      bad,
      edited((m) => {
        m.metadataProps = m.metadataProps.filter((p) => p.key !== META.definitionsVersion);
      }),
    );
    const before = await new ModelRegistry(models).list();
    const r = await cli('models', 'register', bad);
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe('tributary: model metadata lacks tributary.definitions_version');
    expect(await new ModelRegistry(models).list()).toEqual(before);
  });
});
