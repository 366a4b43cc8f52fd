// Effective configuration: flags > environment > config file > defaults. Unset servers mean embedded defaults.
import { existsSync, readFileSync } from 'node:fs';

export interface Config {
  /** Kafka bootstrap servers; empty = the file-based event log at logDir. */
  kafka: string[];
  /** The file-based event log's folder (used when no Kafka is configured). */
  logDir: string;
  /** Confluent-API Schema Registry base URL; unset = the client library's in-memory registry. */
  schemaRegistry?: string;
  /** Valkey URL (redis://host:port); unset = the in-process online store. */
  valkey?: string;
  /** ClickHouse server URL; unset = the embedded engine (chdb) at clickhouseDir. */
  clickhouse?: string;
  clickhouseDir: string;
  /** A cluster of that server: the offline tables become Replicated + Distributed (src/offline/schema.ts). */
  clickhouseCluster?: string;
  partitions: number;
  /** Prefix of topic names, the consumer group and Valkey keys: several pipelines can share servers. */
  namespace: string;
  /** The model registry's folder (see src/model/registry.ts). */
  modelsDir: string;
  /** MLflow tracking server URL: training runs, model versions and the champion alias mirrored there (src/model/mlflow.ts). */
  mlflow?: string;
  /** Bearer token POST /v1/rank requires; unset = no auth. */
  scoringToken?: string;
  /** Most candidates one ranking request may carry. */
  maxCandidates: number;
  /** Share of rankings whose vectors go to the served-vector log, 0..1. */
  servedSampleRate: number;
  /** Longest wait for the online store per ranking; then defaults, flagged. */
  rankTimeoutMs: number;
  /** Scoring keeps candidates' stored fields in process, invalidated by Valkey (src/online/read-cache.ts). */
  readCache: boolean;
}

type Overrides = Partial<Record<keyof Config, unknown>>;

/** Each setting's environment variable. */
export const ENV: Readonly<Record<keyof Config, string>> = {
  kafka: 'TRIBUTARY_KAFKA',
  logDir: 'TRIBUTARY_LOG_DIR',
  schemaRegistry: 'TRIBUTARY_SCHEMA_REGISTRY',
  valkey: 'TRIBUTARY_VALKEY',
  clickhouse: 'TRIBUTARY_CLICKHOUSE',
  clickhouseDir: 'TRIBUTARY_CLICKHOUSE_DIR',
  clickhouseCluster: 'TRIBUTARY_CLICKHOUSE_CLUSTER',
  partitions: 'TRIBUTARY_PARTITIONS',
  namespace: 'TRIBUTARY_NAMESPACE',
  modelsDir: 'TRIBUTARY_MODELS_DIR',
  mlflow: 'TRIBUTARY_MLFLOW_URL',
  scoringToken: 'TRIBUTARY_SCORING_TOKEN',
  maxCandidates: 'TRIBUTARY_MAX_CANDIDATES',
  servedSampleRate: 'TRIBUTARY_SERVED_SAMPLE_RATE',
  rankTimeoutMs: 'TRIBUTARY_RANK_TIMEOUT_MS',
  readCache: 'TRIBUTARY_READ_CACHE',
};

const DEFAULTS: Config = {
  kafka: [],
  logDir: '.data/log',
  clickhouseDir: '.data/clickhouse',
  partitions: 3,
  namespace: '',
  modelsDir: '.data/models',
  maxCandidates: 500,
  servedSampleRate: 0,
  rankTimeoutMs: 50,
  readCache: true,
};

const POSITIVE_INTEGERS: readonly (keyof Config)[] = ['partitions', 'maxCandidates', 'rankTimeoutMs'];

export class ConfigError extends Error {}

/** Levenshtein distance: how far a misspelt key is from each valid one. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitute = (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      row.push(Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, substitute));
    }
    prev = row;
  }
  return prev[b.length] ?? 0;
}

/** The valid key nearest to `key` (case-insensitively), for "did you mean". */
export function nearestKey(key: string): string {
  const keys = Object.keys(ENV);
  const score = (k: string) => distance(key.toLowerCase(), k.toLowerCase());
  return keys.reduce((best, k) => (score(k) < score(best) ? k : best));
}

function readFile(path: string | undefined): Overrides {
  const p = path ?? (existsSync('tributary.config.json') ? 'tributary.config.json' : undefined);
  if (!p) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(p, 'utf8'));
  } catch (err) {
    throw new ConfigError(`cannot read config file ${p}: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new ConfigError(`config file ${p} must hold a JSON object of settings`);
  // A misspelt key would otherwise leave its setting at the default without a word.
  for (const key of Object.keys(parsed)) {
    if (!Object.hasOwn(ENV, key))
      throw new ConfigError(`config file ${p}: unknown key "${key}" (did you mean "${nearestKey(key)}"?)`);
  }
  return parsed as Overrides;
}

function normalise(key: keyof Config, v: unknown): unknown {
  if (v === undefined || v === '') return undefined;
  if (key === 'kafka')
    return (Array.isArray(v) ? v : String(v).split(',')).map((s) => String(s).trim()).filter(Boolean);
  if (POSITIVE_INTEGERS.includes(key)) {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new ConfigError(`${key} must be a positive integer, got ${v}`);
    return n;
  }
  if (key === 'readCache') {
    if (typeof v === 'boolean') return v;
    if (v === 'on' || v === 'off') return v === 'on';
    throw new ConfigError(`readCache must be on or off, got ${v}`);
  }
  if (key === 'servedSampleRate') {
    const n = Number(v);
    if (!(n >= 0 && n <= 1)) throw new ConfigError(`servedSampleRate must be a number from 0 to 1, got ${v}`);
    return n;
  }
  const s = String(v);
  if ((key === 'schemaRegistry' || key === 'clickhouse' || key === 'mlflow') && !/^https?:\/\//.test(s)) {
    throw new ConfigError(`${key} must be an http(s) URL, got "${s}"`);
  }
  // It goes into DDL (ON CLUSTER, Distributed) unquoted, as a cluster name of the server's config.
  if (key === 'clickhouseCluster' && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(s))
    throw new ConfigError(`clickhouseCluster must be a plain cluster name (letters, digits, _), got "${s}"`);
  if (key === 'valkey' && !/^(redis|valkey)s?:\/\//.test(s))
    throw new ConfigError(`valkey must be a redis:// URL, got "${s}"`);
  return s;
}

export function loadConfig(flags: Overrides = {}, env = process.env, configFile?: string): Config {
  const file = readFile(configFile);
  const out = { ...DEFAULTS } as Record<keyof Config, unknown>;
  for (const key of Object.keys(ENV) as (keyof Config)[]) {
    for (const v of [file[key], env[ENV[key]], flags[key]]) {
      const n = normalise(key, v);
      if (n !== undefined) out[key] = n;
    }
  }
  // The embedded engine has no clusters (nor Keeper).
  if (out.clickhouseCluster !== undefined && out.clickhouse === undefined)
    throw new ConfigError('clickhouseCluster needs a ClickHouse server: pass --clickhouse URL (a node of the cluster)');
  return out as unknown as Config;
}

/** The configuration as text with credentials in URLs masked. */
export function describeConfig(c: Config): string {
  const mask = (s: string) => s.replace(/\/\/([^:@/]*):([^@/]+)@/, '//$1:***@');
  return Object.entries(c)
    .map(([k, v]) => {
      if (k === 'scoringToken') return `${k}: ${v === undefined ? '(none)' : '***'}`;
      if (k === 'clickhouseCluster' && v === undefined) return `${k}: (none: one server)`;
      return `${k}: ${v === undefined || (Array.isArray(v) && v.length === 0) ? '(embedded)' : mask(String(v))}`;
    })
    .join('\n');
}
