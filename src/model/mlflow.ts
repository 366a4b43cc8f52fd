// MLflow as a mirror of the model registry, when configured (--mlflow URL): each registered model is a run in the
// experiment "<namespace>tributary" (parameters, metrics, calibration, feature contract, the ONNX file) and a
// version of the registered model "<namespace>tributary-ctr" tagged with the registry's version; promotion and
// rollback move the alias "champion". The folder registry stays the source of truth; MLflow's REST API over fetch.
import type { Config } from '../config/config.ts';
import { ServiceUnreachableError, unreachable } from '../config/unreachable.ts';
import { publicUrl, withBasicAuth } from '../util/url-credentials.ts';
import { readContract } from './contract.ts';
import { ModelRegistry, type RegistryHooks, type TrainingRun } from './registry.ts';

export const MLFLOW = {
  experiment: 'tributary',
  model: 'tributary-ctr',
  alias: 'champion',
  /** Tag on runs and model versions: the registry's version (12 hex of the model's sha256). */
  versionTag: 'tributary.version',
} as const;

/** MLflow answered but refused a request (a bad name, a permission): exit 1 with its message. */
export class MlflowError extends Error {}

interface RunInfo {
  run_id: string;
  experiment_id: string;
  artifact_uri: string;
}

interface ModelVersion {
  name: string;
  version: string;
  run_id?: string;
  tags?: { key: string; value: string }[];
}

const TIMEOUT_MS = 15_000;
// MLflow's limits: param values 6000 characters, tag values 8000; a batch holds up to 1000 metrics.
const PARAM_MAX = 6000;

/** Scalars of a nested object as dotted keys: {data: {train: {rows: 3}}} -> data.train.rows = 3. */
function flatten(o: Record<string, unknown>, prefix = ''): [string, unknown][] {
  const out: [string, unknown][] = [];
  for (const [k, v] of Object.entries(o)) {
    if (v !== null && typeof v === 'object' && !Array.isArray(v))
      out.push(...flatten(v as Record<string, unknown>, `${prefix}${k}.`));
    else out.push([`${prefix}${k}`, v]);
  }
  return out;
}

/** A training run's metrics as MLflow metrics: the numbers, an interval as _low/_high, calibration by step. */
export function runMetrics(
  run: TrainingRun,
  at: number,
): { key: string; value: number; timestamp: number; step: number }[] {
  const out: { key: string; value: number; timestamp: number; step: number }[] = [];
  const add = (key: string, value: unknown, step = 0) => {
    if (typeof value === 'number' && Number.isFinite(value)) out.push({ key, value, timestamp: at, step });
  };
  for (const [key, value] of Object.entries(run.metrics)) {
    if (typeof value === 'number') add(key, value);
    else if (Array.isArray(value) && value.length === 2 && value.every((x) => typeof x === 'number')) {
      add(`${key}_low`, value[0]);
      add(`${key}_high`, value[1]);
    } else if (Array.isArray(value)) {
      // Calibration tables: one metric per column, the bucket's index as the step (MLflow charts it as a curve).
      value.forEach((bucket, step) => {
        if (bucket && typeof bucket === 'object')
          for (const [col, v] of Object.entries(bucket as Record<string, unknown>)) add(`${key}.${col}`, v, step);
      });
    }
  }
  add('seconds', run.seconds);
  return out;
}

export class Mlflow {
  private readonly target: URL;
  private readonly headers: Record<string, string>;
  /** Shown in messages: the URL without credentials. */
  readonly where: string;
  readonly experimentName: string;
  readonly modelName: string;

  constructor(url: string, namespace = '') {
    const { target, headers } = withBasicAuth(url);
    this.target = target;
    this.headers = headers;
    this.where = publicUrl(url);
    this.experimentName = `${namespace}${MLFLOW.experiment}`;
    this.modelName = `${namespace}${MLFLOW.model}`;
  }

  /** Throws ServiceUnreachableError unless the server answers: called before any work, so nothing is half done. */
  async check(): Promise<void> {
    await this.call('GET', 'experiments/search', { max_results: 1 });
  }

  /** Hooks for ModelRegistry: registering logs a run and a model version; promote and rollback move the alias. */
  hooks(): RegistryHooks {
    return {
      registered: async (version, bytes, run) => {
        await this.registerVersion(version, bytes, run);
      },
      pointed: async (version, bytes, run) => {
        // A version registered before MLflow was configured appears now, with its run record.
        const mv = (await this.findVersion(version)) ?? (await this.registerVersion(version, bytes, run));
        await this.call('POST', 'registered-models/alias', {
          name: this.modelName,
          alias: MLFLOW.alias,
          version: mv.version,
        });
      },
    };
  }

  /** Logs the run, and creates the model version unless one with this registry version exists; returns it. */
  async registerVersion(version: string, bytes: Uint8Array, run: TrainingRun): Promise<ModelVersion> {
    const info = await this.logRun(version, bytes, run);
    const existing = await this.findVersion(version);
    if (existing) return existing;
    await this.ensureModel();
    const created = await this.call<{ model_version: ModelVersion }>('POST', 'model-versions/create', {
      name: this.modelName,
      source: `${info.artifact_uri}/model`,
      run_id: info.run_id,
      tags: [
        { key: MLFLOW.versionTag, value: version },
        { key: 'tributary.definitions_version', value: run.definitions_version },
      ],
      description: `tributary model ${version}`,
    });
    return created.model_version;
  }

  /** The MLflow model version tagged with this registry version, if any. */
  async findVersion(version: string): Promise<ModelVersion | null> {
    const filter = `name='${this.modelName.replaceAll("'", "\\'")}' and tag.\`${MLFLOW.versionTag}\`='${version}'`;
    try {
      const r = await this.call<{ model_versions?: ModelVersion[] }>('GET', 'model-versions/search', { filter });
      return r.model_versions?.[0] ?? null;
    } catch (err) {
      if (err instanceof MlflowError && /RESOURCE_DOES_NOT_EXIST/.test(err.message)) return null;
      throw err;
    }
  }

  private async logRun(version: string, bytes: Uint8Array, run: TrainingRun): Promise<RunInfo> {
    const experimentId = await this.experimentId();
    const started = Date.parse(run.trained_at) || Date.now();
    const contract = readContract(bytes);
    const { run: created } = await this.call<{ run: { info: RunInfo } }>('POST', 'runs/create', {
      experiment_id: experimentId,
      run_name: `${String(run.params.model ?? 'model')} ${version}`,
      start_time: started,
      tags: [
        { key: MLFLOW.versionTag, value: version },
        { key: 'tributary.definitions_version', value: contract.definitionsVersion },
        { key: 'tributary.features', value: JSON.stringify(contract.features) },
        { key: 'tributary.training_set', value: run.training_set },
      ],
    });
    const info = created.info;
    const params = flatten({ ...run.params, data: run.data })
      .filter(([, v]) => v !== undefined)
      .map(([key, v]) => ({ key, value: (typeof v === 'string' ? v : JSON.stringify(v)).slice(0, PARAM_MAX) }));
    params.push({ key: 'definitions_version', value: contract.definitionsVersion });
    params.push({ key: 'features', value: String(contract.features.length) });
    const metrics = runMetrics(run, started);
    for (let i = 0; i < Math.max(metrics.length, 1); i += 1000) {
      await this.call('POST', 'runs/log-batch', {
        run_id: info.run_id,
        metrics: metrics.slice(i, i + 1000),
        params: i === 0 ? params : [],
      });
    }
    await this.upload(info, 'model/model.onnx', bytes, 'application/octet-stream');
    const json = (o: unknown) => new TextEncoder().encode(`${JSON.stringify(o, null, 2)}\n`);
    await this.upload(info, 'contract.json', json(contract), 'application/json');
    await this.upload(info, 'run.json', json({ version, ...run }), 'application/json');
    const calibration = Object.fromEntries(Object.entries(run.metrics).filter(([k]) => k.includes('calibration')));
    if (Object.keys(calibration).length)
      await this.upload(info, 'calibration.json', json(calibration), 'application/json');
    await this.call('POST', 'runs/update', {
      run_id: info.run_id,
      status: 'FINISHED',
      end_time: started + Math.round(run.seconds * 1000),
    });
    return info;
  }

  private async experimentId(): Promise<string> {
    try {
      const r = await this.call<{ experiment: { experiment_id: string } }>('GET', 'experiments/get-by-name', {
        experiment_name: this.experimentName,
      });
      return r.experiment.experiment_id;
    } catch (err) {
      if (!(err instanceof MlflowError && /RESOURCE_DOES_NOT_EXIST/.test(err.message))) throw err;
    }
    try {
      const r = await this.call<{ experiment_id: string }>('POST', 'experiments/create', { name: this.experimentName });
      return r.experiment_id;
    } catch (err) {
      // Another process created it between the two calls.
      if (err instanceof MlflowError && /RESOURCE_ALREADY_EXISTS/.test(err.message)) return this.experimentId();
      throw err;
    }
  }

  private async ensureModel(): Promise<void> {
    try {
      await this.call('POST', 'registered-models/create', {
        name: this.modelName,
        description: 'Click-through-rate models registered by tributary (tag tributary.version: the registry version)',
      });
    } catch (err) {
      if (!(err instanceof MlflowError && /RESOURCE_ALREADY_EXISTS/.test(err.message))) throw err;
    }
  }

  /**
   * Artifacts go through the server's proxy (mlflow-artifacts:, `mlflow server --serve-artifacts`, the default),
   * so this process needs no access to the artifact store. A server storing them elsewhere (s3://, a shared
   * folder) gets none from here: said on stderr, the run and version are logged all the same.
   */
  private async upload(info: RunInfo, path: string, body: Uint8Array, type: string): Promise<void> {
    const m = /^mlflow-artifacts:\/*(.*)$/.exec(info.artifact_uri);
    if (!m) {
      if (!this.warned)
        process.stderr.write(
          `tributary: MLflow stores artifacts at ${info.artifact_uri}, not through its proxy: the model file, contract and calibration are not uploaded (start mlflow server with --serve-artifacts)\n`,
        );
      this.warned = true;
      return;
    }
    const url = new URL(`api/2.0/mlflow-artifacts/artifacts/${m[1]}/${path}`, this.base());
    await this.send('PUT', url, body, type);
  }

  private warned = false;

  private base(): URL {
    const u = new URL(this.target);
    if (!u.pathname.endsWith('/')) u.pathname += '/';
    return u;
  }

  private async call<T = unknown>(method: 'GET' | 'POST', endpoint: string, body: Record<string, unknown>): Promise<T> {
    const url = new URL(`api/2.0/mlflow/${endpoint}`, this.base());
    if (method === 'GET') {
      for (const [k, v] of Object.entries(body)) url.searchParams.set(k, String(v));
      return (await this.send(method, url)) as T;
    }
    return (await this.send(method, url, JSON.stringify(body), 'application/json')) as T;
  }

  private async send(method: string, url: URL, body?: string | Uint8Array, type?: string): Promise<unknown> {
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: { ...this.headers, ...(type ? { 'content-type': type } : {}) },
        body,
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (err) {
      const cause = (err as Error & { cause?: Error }).cause ?? err;
      throw unreachable('MLflow', this.where, 'mlflow', 'mlflow', cause);
    }
    const text = await res.text();
    if (!res.ok) {
      let reason = text.slice(0, 300);
      try {
        const e = JSON.parse(text) as { error_code?: string; message?: string };
        if (e.error_code) reason = `${e.error_code}: ${e.message ?? ''}`;
      } catch {}
      if (res.status >= 502 && res.status <= 504)
        throw new ServiceUnreachableError(`MLflow at ${this.where} answered HTTP ${res.status} (${reason})`);
      const endpoint = url.pathname.replace(/^.*\/api\/2\.0\//, '');
      throw new MlflowError(`MLflow refused ${method} ${endpoint}: HTTP ${res.status} ${reason}`);
    }
    return text ? JSON.parse(text) : {};
  }
}

/**
 * The registry that commands which register, promote or roll back use: mirrored to MLflow when `config.mlflow` is
 * set (checked first, so an unreachable server stops the command before anything changes), the folder alone if not.
 */
export async function openModelRegistry(config: Config): Promise<ModelRegistry> {
  if (!config.mlflow) return new ModelRegistry(config.modelsDir);
  const mlflow = new Mlflow(config.mlflow, config.namespace);
  await mlflow.check();
  return new ModelRegistry(config.modelsDir, mlflow.hooks());
}
