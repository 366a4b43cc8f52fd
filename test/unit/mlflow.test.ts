// What a training run becomes in MLflow (pure), and its URL masked like every other server's.
import { describe, expect, it } from 'vitest';
import { describeConfig, loadConfig } from '../../src/config/config.ts';
import { runMetrics } from '../../src/model/mlflow.ts';
import type { TrainingRun } from '../../src/model/registry.ts';

const run: TrainingRun = {
  trained_at: '2026-11-02T00:00:00.000Z',
  training_set: '/tmp/t.csv',
  definitions_version: 'abc',
  params: { l2: 0.01 },
  data: {},
  metrics: {
    auc: 0.7,
    logloss: 0.3,
    auc_lift_ci95: [0.01, 0.05],
    baseline_feature: 'ad_ctr_7d',
    calibration: [
      { from: 0, to: 0.1, rows: 10, predicted: 0.05, observed: 0.04 },
      { from: 0.1, to: 1, rows: 10, predicted: 0.2, observed: 0.3 },
    ],
  },
  seconds: 1.5,
};

describe('MLflow mapping', () => {
  it('logs numbers as metrics, an interval as _low/_high, calibration buckets as steps; skips text', () => {
    const m = runMetrics(run, 7);
    const get = (key: string, step = 0) => m.find((x) => x.key === key && x.step === step)?.value;
    expect(get('auc')).toBe(0.7);
    expect([get('auc_lift_ci95_low'), get('auc_lift_ci95_high')]).toEqual([0.01, 0.05]);
    expect([get('calibration.observed', 0), get('calibration.observed', 1)]).toEqual([0.04, 0.3]);
    expect(get('seconds')).toBe(1.5);
    expect(m.some((x) => x.key.startsWith('baseline_feature'))).toBe(false);
    expect(m.every((x) => x.timestamp === 7)).toBe(true);
  });

  it('reads TRIBUTARY_MLFLOW_URL, refuses a non-URL, masks credentials', () => {
    const c = loadConfig({}, { TRIBUTARY_MLFLOW_URL: 'https://ci:s3cret@mlflow.example:5000' });
    expect(c.mlflow).toBe('https://ci:s3cret@mlflow.example:5000');
    expect(describeConfig(c)).toContain('mlflow: https://ci:***@mlflow.example:5000');
    expect(describeConfig(c)).not.toContain('s3cret');
    expect(() => loadConfig({ mlflow: 'mlflow:5000' }, {})).toThrow(/mlflow must be an http\(s\) URL/);
  });
});
