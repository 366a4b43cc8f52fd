// Training on a generated training set, scored by the real onnxruntime: the model beats the ad-CTR baseline on the
// later period, the ONNX graph computes exactly the TS model, training is reproducible to the byte, the registry
// keeps its pointer whole, and the contract check names what differs.
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { runBackfill } from '../../src/backfill/run.ts';
import { fromEventFile } from '../../src/backfill/sources.ts';
import { writeEventFile } from '../../src/events/event-file.ts';
import { generate } from '../../src/events/generator.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { HOUR } from '../../src/features/time.ts';
import { checkContract, clickProbabilities, META, ModelContractError, readContract } from '../../src/model/contract.ts';
import { applyTransform, fitLogistic, predict, transformOf } from '../../src/model/logistic.ts';
import { writeOnnx } from '../../src/model/onnx-writer.ts';
import { ModelRegistry, type TrainingRun } from '../../src/model/registry.ts';
import { type TrainResult, train } from '../../src/model/train.ts';

const dir = mkdtempSync(join(tmpdir(), 'model-'));
const features = new FeatureSet(DEFAULT_GROUPS);
const trainingSet = join(dir, 'training.csv');
const opts = { trainingSet, features, evalFraction: 0.25, l2: 0.01, seed: 1 };
let first: TrainResult;

beforeAll(async () => {
  const events = join(dir, 'events.ndjson');
  await writeEventFile(events, generate({ seed: 5, days: 2, impressionsPerDay: 8000, users: 1500, ads: 120 }));
  await runBackfill({
    features,
    open: () => fromEventFile(events),
    sourceName: 'generated',
    out: trainingSet,
    attributionMs: HOUR,
    allowedLatenessMs: HOUR,
  });
  first = await train(opts);
}, 60_000);

describe('train', () => {
  it('ranks the later period better than the ad CTR alone, and says so in the model', () => {
    const m = first.metrics;
    expect(m.baseline_feature).toBe('ad__ctr_7d');
    expect(m.eval_positives).toBeGreaterThan(100);
    expect(m.auc).toBeGreaterThan(m.baseline_auc + 0.01);
    expect(m.logloss).toBeLessThan(m.baseline_logloss);
    expect(m.auc_lift_ci95[0]).toBeGreaterThan(0);
    // Calibrated on the whole: mean prediction within 20% of the observed rate.
    expect(Math.abs(m.mean_pctr / m.eval_ctr - 1)).toBeLessThan(0.2);
    const c = readContract(first.bytes);
    expect(c.features).toEqual(features.names);
    expect(c.definitionsVersion).toBe(features.version);
    expect(c.metrics.auc).toBe(m.auc);
    expect(c.output).toBe('pctr');
    expect(c.trainingWindow).toEqual({ from: first.run.data.train?.from, to: first.run.data.train?.to });
    expect(Date.parse(c.trainingWindow?.to as string)).toBeLessThanOrEqual(
      Date.parse(first.run.data.eval?.from as string),
    );
  });

  it('runs in onnxruntime with the same prediction as the TS model on every evaluation row', async () => {
    const session = await ort.InferenceSession.create(first.bytes);
    const f = features.names.length;
    const { x, pctr } = first.evaluation;
    const out = await session.run({ features: new ort.Tensor('float32', Float32Array.from(x), [pctr.length, f]) });
    const got = out.pctr as ort.Tensor;
    expect(got.dims).toEqual([pctr.length, 1]);
    let worst = 0;
    for (let i = 0; i < pctr.length; i++) worst = Math.max(worst, Math.abs((got.data[i] as number) - pctr[i]!));
    expect(worst).toBeLessThan(1e-6);
    // Out-of-range inputs (negative counts, rates at 0 and 1) still give probabilities, never NaN.
    const odd = new Float32Array(f).map((_, j) => (j % 2 ? -5 : features.features[j]!.kind === 'ratio' ? 1 : 1e9));
    const p = (await session.run({ features: new ort.Tensor('float32', odd, [1, f]) })).pctr!.data[0] as number;
    expect(p).toBeGreaterThan(0);
    expect(p).toBeLessThan(1);
    expect(p).toBeCloseTo(predict(first.model, odd), 6);
  });

  it('gives the same bytes for the same data and seed, another version for another seed or penalty', async () => {
    const again = await train(opts);
    expect(Buffer.from(again.bytes).equals(Buffer.from(first.bytes))).toBe(true);
    const registry = new ModelRegistry(join(dir, 'versions'));
    const v1 = await registry.register(first.bytes, first.run);
    expect(await registry.register(again.bytes, again.run)).toBe(v1);
    const v2 = await registry.register((await train({ ...opts, seed: 2 })).bytes, first.run);
    const v3 = await registry.register((await train({ ...opts, l2: 0.1 })).bytes, first.run);
    expect(new Set([v1, v2, v3]).size).toBe(3);
  }, 30_000);

  it('fits the penalised optimum: the gradient vanishes there', () => {
    // A small synthetic problem with a known answer shape: two informative features and one constant.
    const n = 4000;
    const transforms = [transformOf('count'), transformOf('ratio'), transformOf('count')];
    const x = new Float64Array(n * 3);
    const y = new Uint8Array(n);
    for (let r = 0; r < n; r++) {
      const a = (r * 7919) % 50;
      const b = 0.01 + ((r * 104729) % 97) / 200;
      x.set([a, b, 3], r * 3);
      const logit = -3 + 0.6 * Math.log1p(a) + 1.2 * applyTransform('logit', b);
      y[r] = ((r * 2654435761) % 1000) / 1000 < 1 / (1 + Math.exp(-logit)) ? 1 : 0;
    }
    const l2 = 0.05;
    const { model } = fitLogistic(x, y, transforms, { l2 });
    const grad = [0, 0, 0, 0];
    for (let r = 0; r < n; r++) {
      const row = x.subarray(r * 3, r * 3 + 3);
      const g = predict(model, row) - y[r]!;
      for (let j = 0; j < 3; j++)
        grad[j]! += (g * (applyTransform(transforms[j]!, row[j]!) - model.mean[j]!) * model.scale[j]!) / n;
      grad[3]! += g / n;
    }
    for (let j = 0; j < 3; j++) grad[j]! += l2 * model.weights[j]!;
    for (const g of grad) expect(Math.abs(g)).toBeLessThan(1e-9);
    expect(model.weights[0]).toBeGreaterThan(0.1);
    expect(model.weights[1]).toBeGreaterThan(0.1);
    expect(model.weights[2]).toBe(0); // constant: no information, no weight
  });
});

describe('model registry', () => {
  const run = (name: string): TrainingRun => ({ ...first.run, params: { name } });
  const bytesOf = (i: number) => new Uint8Array([...first.bytes, i]); // distinct contents, distinct versions

  it('registers by content, lists, promotes, rolls back through the history and logs every run', async () => {
    const registry = new ModelRegistry(join(dir, 'registry'));
    expect(await registry.list()).toEqual([]);
    expect(await registry.current()).toBeNull();
    await expect(registry.rollback()).rejects.toThrow(/nothing to roll back/);
    const [a, b, c] = [
      await registry.register(bytesOf(1), run('a')),
      await registry.register(bytesOf(2), run('b')),
      await registry.register(bytesOf(3), run('c')),
    ];
    expect(a).toMatch(/^[0-9a-f]{12}$/);
    expect(Buffer.from(await registry.read(b as string)).equals(Buffer.from(bytesOf(2)))).toBe(true);
    await expect(registry.promote('0123456789ab')).rejects.toThrow(/no model 0123456789ab/);
    await expect(registry.read('../../etc')).rejects.toThrow(/not a model version/);

    for (const v of [a, b, c]) await registry.promote(v as string);
    expect(await registry.current()).toBe(c);
    expect(await registry.rollback()).toBe(b);
    expect(await registry.rollback()).toBe(a);
    await expect(registry.rollback()).rejects.toThrow(/nothing to roll back/);
    expect(await registry.current()).toBe(a);
    await registry.promote(c as string);
    expect(await registry.rollback()).toBe(a);

    const listed = await registry.list();
    expect(listed.map((e) => e.version).sort()).toEqual([a, b, c].sort());
    expect(listed.filter((e) => e.current).map((e) => e.version)).toEqual([a]);
    const runs = readFileSync(join(dir, 'registry', 'runs.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(runs.map((r) => [r.version, r.params.name])).toEqual([
      [a, 'a'],
      [b, 'b'],
      [c, 'c'],
    ]);
    expect(runs[0].metrics.auc).toBe(first.metrics.auc);
  });

  it('replaces CURRENT atomically: a reader racing promotions sees one whole version or the other', async () => {
    const home = join(dir, 'atomic');
    const registry = new ModelRegistry(home);
    const versions = [await registry.register(bytesOf(4), run('x')), await registry.register(bytesOf(5), run('y'))];
    await registry.promote(versions[0] as string);
    let done = false;
    const seen = new Set<string>();
    const reader = (async () => {
      while (!done) seen.add(await readFile(join(home, 'CURRENT'), 'utf8'));
    })();
    for (let i = 1; i <= 100; i++) await registry.promote(versions[i % 2] as string);
    done = true;
    await reader;
    expect([...seen].sort()).toEqual(versions.map((v) => `${v}\n`).sort());
    expect(readdirSync(home).filter((n) => n.includes('tmp'))).toEqual([]);
    expect(existsSync(join(home, 'history.jsonl'))).toBe(true);
  });
});

describe('model contract', () => {
  it('accepts the model it was trained for and names what differs otherwise', () => {
    const contract = readContract(first.bytes);
    expect(() => checkContract(contract, features)).not.toThrow();
    const refuse = (c: typeof contract) => {
      try {
        checkContract(c, features);
      } catch (err) {
        expect(err).toBeInstanceOf(ModelContractError);
        return (err as Error).message;
      }
      throw new Error('accepted a mismatching model');
    };
    const names = [...features.names];
    [names[3], names[7]] = [names[7] as string, names[3] as string];
    expect(refuse({ ...contract, features: names })).toMatch(
      /reordered features: column 3 is "ad__clicks_7d", the definitions have "ad__impressions_7d"/,
    );
    expect(refuse({ ...contract, features: features.names.filter((n) => n !== 'user__ctr_24h') })).toMatch(
      /missing features: user__ctr_24h/,
    );
    expect(refuse({ ...contract, features: [...features.names, 'ad__ctr_30d'] })).toMatch(
      /extra features: ad__ctr_30d/,
    );
    expect(refuse({ ...contract, definitionsVersion: 'abcdef123456' })).toMatch(
      new RegExp(`definitions version mismatch: abcdef123456 here, ${features.version} in the definitions`),
    );
  });

  it('refuses bytes that are not a model with the contract', () => {
    expect(() => readContract(new Uint8Array([1, 2, 3, 255]))).toThrow(ModelContractError);
    expect(() => readContract(new Uint8Array())).toThrow(/model inputs are \[\], expected exactly "features"/);
    const narrow = writeOnnx(first.model, [
      [META.features, JSON.stringify(features.names.slice(1))],
      [META.definitionsVersion, features.version],
    ]);
    expect(() => readContract(narrow)).toThrow(/has 58 columns but its metadata lists 57 features/);
    const unversioned = writeOnnx(first.model, [
      [META.features, JSON.stringify(features.names)],
      [META.trainingWindow, '{}'],
      [META.metrics, '{}'],
    ]);
    expect(() => readContract(unversioned)).toThrow(/model metadata lacks tributary.definitions_version/);
  });
});

describe('click probability output', () => {
  it('reads pctr [n, 1] as it is and a classifier’s probabilities [n, 2] by their click column', () => {
    expect([...clickProbabilities(Float32Array.of(0.1, 0.2), [2, 1], 2)]).toEqual([...Float32Array.of(0.1, 0.2)]);
    expect([...clickProbabilities(Float32Array.of(0.9, 0.1, 0.7, 0.3), [2, 2], 2)]).toEqual([
      ...Float32Array.of(0.1, 0.3),
    ]);
    expect(() => clickProbabilities(new Float32Array(6), [2, 3], 2)).toThrow(/answered shape \[2, 3\] for 2 rows/);
    expect(() => clickProbabilities(new Float32Array(2), [1, 2], 2)).toThrow(ModelContractError);
  });
});
