// `tributary demo` (npm start): the whole loop in one process on embedded defaults, through the same code paths
// the servers use: generate traffic into the file log -> stream it into the in-process online store and the
// embedded ClickHouse -> backfill a training set from the stream's history -> parity (served == backfill == SQL)
// -> train and register a model -> score the held-out period's requests -> serve /v1/rank until stopped.
// The implementation, loaded by the command's action only (demo-command.ts registers it).
import { copyFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { SingleBar } from 'cli-progress';
import { checkParity, recordParityRun } from '../backfill/parity.ts';
import { runBackfill } from '../backfill/run.ts';
import { fromClickHouse } from '../backfill/sources.ts';
import { csvToParquet, writeTrainingTable } from '../backfill/training-clickhouse.ts';
import { type Config, ConfigError } from '../config/config.ts';
import { DeadLetterWatch } from '../console/dead-letters.ts';
import { registrySource } from '../console/metrics-source.ts';
import { startConsole } from '../console/start.ts';
import { generate } from '../events/generator.ts';
import type { AdImpression, AdRequest } from '../events/types.ts';
import { FeatureSet } from '../features/compile.ts';
import { DEFAULT_GROUPS } from '../features/definitions.ts';
import { HOUR } from '../features/time.ts';
import { ModelRegistry } from '../model/registry.ts';
import { train } from '../model/train.ts';
import { openClickHouse } from '../offline/clickhouse.ts';
import { ScoringMetrics } from '../scoring/metrics.ts';
import { ModelRuntime } from '../scoring/model-runtime.ts';
import { Ranker } from '../scoring/ranker.ts';
import { buildServer } from '../scoring/server.ts';
import { openStream } from '../streams/open.ts';
import { sourceTopics } from '../streams/processor.ts';
import { partitionProgress } from '../streams/progress.ts';
import { startLiveTraffic } from './demo-live.ts';
import { publishAll } from './events-commands.ts';
import { compareWithLightgbm, type LightgbmComparison, lightgbmPython } from './lightgbm-example.ts';
import { log as baseLog } from './log.ts';
import { openLiveParity } from './verify-command.ts';

export interface DemoOptions {
  days: string;
  impressionsPerDay: string;
  candidates: string;
  out: string;
  port: string;
  consolePort: string;
  liveRate: string;
  serve: boolean;
}

/** The ClickHouse table the demo's training set is loaded into (as `tributary backfill --table` would). */
export const DEMO_TRAINING_TABLE = 'training_rows';

const DAY_MS = 86_400_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');
const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;

/** `demo`'s action (see the file's head). */
export async function runDemo(base: Config, opts: DemoOptions): Promise<void> {
  if (base.kafka.length || base.valkey || base.clickhouse)
    throw new ConfigError(
      'demo runs on embedded defaults only: drop --kafka/--valkey/--clickhouse (with servers, use `tributary stream`, `backfill`, `train`, `serve`)',
    );
  const days = Number(opts.days);
  const perDay = Number(opts.impressionsPerDay);
  const candidates = Number(opts.candidates);
  const port = Number(opts.port);
  const consolePort = Number(opts.consolePort);
  const liveRate = Number(opts.liveRate);
  for (const [flag, v] of [
    ['--days', days],
    ['--impressions-per-day', perDay],
    ['--candidates', candidates],
  ] as const)
    if (!Number.isInteger(v) || v < 1) throw new ConfigError(`${flag} must be a positive integer`);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError('--port must be 0..65535');
  if (!Number.isInteger(consolePort) || consolePort < 0 || consolePort > 65535)
    throw new ConfigError('--console-port must be 0..65535');
  if (!(liveRate >= 0 && liveRate <= 1000)) throw new ConfigError('--live-rate must be 0..1000 impressions/s');
  if (days < 2) throw new ConfigError('--days must be at least 2: the model is evaluated on a later period');
  // Say it now rather than after the whole loop.
  if (opts.serve && !(await portFree(port)))
    throw new ConfigError(`port ${port} is taken: pass --port N (0 = any free port) or --no-serve`);
  if (opts.serve && consolePort === port && port !== 0) throw new ConfigError('--console-port must differ from --port');
  if (opts.serve && !(await portFree(consolePort)))
    throw new ConfigError(`port ${consolePort} is taken: pass --console-port N (0 = any free port) or --no-serve`);

  const dir = resolve(opts.out);
  rmSync(dir, { recursive: true, force: true });
  const config: Config = {
    ...base,
    logDir: `${dir}/log`,
    clickhouseDir: `${dir}/clickhouse`,
    modelsDir: `${dir}/models`,
  };
  const say = (s: string) => process.stdout.write(`${s}\n`);
  // The report narrates each step itself: the parts' info lines would land inside it (both reach the terminal);
  // warnings and errors still show.
  const log = baseLog.child({}, { level: process.env.TRIBUTARY_LOG_LEVEL ?? 'warn' });
  const step = (s: string) => say(`\n▸ ${s}`);
  const tty = process.stdout.isTTY === true;
  const t0 = performance.now();
  const features = new FeatureSet(DEFAULT_GROUPS);

  // The days up to today's midnight (UTC): the live traffic after the report (demo-live.ts) continues them at the
  // wall clock, so rankings and windows read "now" over the generated history.
  const start = Math.floor(Date.now() / DAY_MS) * DAY_MS - days * DAY_MS;
  const records = generate({ start, days, impressionsPerDay: perDay, candidatesPerRequest: candidates });
  const streamed = records.filter((r) => r.record.kind === 'impression' || r.record.kind === 'click').length;

  step(
    `generating ${days} days of traffic into the file log (${config.logDir}) an hour at a time, streaming each hour into the in-process online store and the embedded ClickHouse`,
  );
  const ch = await openClickHouse({ dir: config.clickhouseDir });
  const stream = await openStream(config, {
    features,
    group: 'demo',
    allowedLatenessMs: HOUR,
    maxBatch: 20_000,
    offline: ch,
    recordServed: true,
    log,
  });
  const tStream = performance.now();
  await stream.service.start();
  const consumed = async () => (await stream.metrics.events.get()).values.reduce((total, v) => total + v.value, 0);
  const bar = tty ? new SingleBar({ format: '  {bar} {value}/{total} events | {rate}/s' }) : undefined;
  bar?.start(streamed, 0, { rate: 0 });
  // The log is written an hour of ingestion time at a time and streamed before the next hour lands, as a stream
  // that keeps up sees live traffic. Written all at once, each partition's backlog would be applied whole after
  // another's (every impression before any click): every click feature would read 0 in serving and training.
  let published = 0;
  for (const hour of byHour(records)) {
    published += await publishAll(config, hour, log);
    while (!(await stream.caughtUp())) await sleep(10);
    const n = await consumed();
    bar?.update(n, { rate: fmt(n / ((performance.now() - tStream) / 1000)) });
  }
  const streamSeconds = (performance.now() - tStream) / 1000;
  bar?.update(streamed, { rate: fmt(streamed / streamSeconds) });
  bar?.stop();
  // Served, the stream keeps running after the report and applies the live traffic (demo-live.ts).
  if (!opts.serve) await stream.close();
  say(
    `  ${fmt(published)} events published (impressions, clicks, ad requests; late, out-of-order and duplicate ones too)`,
  );
  const verdicts = new Map<string, number>();
  for (const v of (await stream.metrics.events.get()).values)
    verdicts.set(String(v.labels.verdict), (verdicts.get(String(v.labels.verdict)) ?? 0) + v.value);
  const tiles = await scalar(ch, 'SELECT sum(length(tile_fields)) FROM feature_tile_batches');
  say(
    `  ${fmt(streamed)} events in ${streamSeconds.toFixed(1)} s (${fmt(streamed / streamSeconds)} events/s): ` +
      [...verdicts].map(([k, n]) => `${fmt(n)} ${k}`).join(', '),
  );
  say(`  ${fmt(tiles)} feature tile rows written offline; ${features.names.length} features online`);

  step('backfilling a point-in-time training set from the stream’s history (same definitions)');
  const trainingSet = `${dir}/training.csv`;
  const tBackfill = performance.now();
  const meta = await runBackfill({
    features,
    open: () => fromClickHouse(ch),
    sourceName: 'clickhouse',
    out: trainingSet,
    attributionMs: HOUR,
    allowedLatenessMs: HOUR,
  });
  // Also in ClickHouse, beside the stream's tables, so analysts can query the rows (the README's examples do).
  await writeTrainingTable(ch, { table: DEMO_TRAINING_TABLE, runId: 'demo', file: trainingSet, format: 'csv', meta });
  say(
    `  ${fmt(meta.rows)} rows, ${fmt(meta.positives)} clicked, ${fmt(meta.held_back)} held back (attribution window open) in ${((performance.now() - tBackfill) / 1000).toFixed(1)} s -> ${trainingSet} and table ${DEMO_TRAINING_TABLE}`,
  );

  // The same rows as Parquet for the LightGBM example (examples/lightgbm), when its Python venv is there.
  const python = lightgbmPython();
  const parquet = `${dir}/training.parquet`;
  if (python) {
    await csvToParquet(ch, trainingSet, parquet, meta.features);
    copyFileSync(`${trainingSet}.meta.json`, `${parquet}.meta.json`);
  }

  step('parity: served (online store) == backfill == independent ClickHouse SQL, every impression, every feature');
  const parity = await checkParity(ch, features, DEFAULT_GROUPS, HOUR);
  await recordParityRun(ch, parity);
  say(
    `  ${fmt(parity.impressions)} impressions × ${features.names.length} features: ${parity.mismatches} mismatches` +
      (parity.missingServed + parity.missingSql ? ` (${parity.missingServed + parity.missingSql} missing)` : ''),
  );
  if (!opts.serve) await ch.close();

  step('training a logistic regression (ONNX) on the earlier 80%, evaluating on the later 20%');
  const result = await train({ trainingSet, features, evalFraction: 0.2, l2: 0.01, seed: 1 });
  const registry = new ModelRegistry(config.modelsDir);
  const version = await registry.register(result.bytes, result.run);
  await registry.promote(version);
  const m = result.metrics;
  say(`  model ${version} registered and current (${config.modelsDir})`);

  let lightgbm: LightgbmComparison | undefined;
  if (python) {
    step('training a LightGBM model in Python (examples/lightgbm) on the same rows as Parquet; registering it beside');
    lightgbm = await compareWithLightgbm({
      python,
      parquet,
      out: `${dir}/lightgbm.onnx`,
      registry,
      features,
      builtIn: result.bytes,
      heldOut: result.evaluation,
    });
    say(`  model ${lightgbm.version} registered, not promoted (tributary models promote ${lightgbm.version})`);
  } else say('  (LightGBM comparison skipped: no Python venv; make one with examples/lightgbm/make-venv.sh)');

  step('scoring the held-out period’s ad requests with the model over the online store');
  const metrics = new ScoringMetrics();
  const models = new ModelRuntime(registry, features, metrics, log);
  await models.start();
  const ranker = new Ranker(
    { features, reader: stream.online, models, metrics, log },
    { readTimeoutMs: config.rankTimeoutMs },
  );
  const evalFrom = Date.parse(result.run.data.eval?.from ?? '');
  const scored = await scoreHeldOut(ranker, records, evalFrom);
  say(
    `  ${fmt(scored.requests)} requests × ${candidates} candidates: p50 ${scored.p50.toFixed(2)} ms, p99 ${scored.p99.toFixed(2)} ms per ranking; ` +
      `clicked ads ranked in the top 10% of their candidates ${(100 * scored.clickedTopDecile).toFixed(1)}% of the time (random: 10%)`,
  );

  const seconds = (performance.now() - t0) / 1000;
  say('\n── report ──────────────────────────────────────────────');
  say(`events streamed        ${fmt(streamed)} at ${fmt(streamed / streamSeconds)} events/s`);
  say(`features               ${features.names.length} (definitions ${features.version}), ${fmt(tiles)} tile rows`);
  say(`training rows          ${fmt(meta.rows)} (${fmt(meta.positives)} clicked)`);
  say(`AUC                    ${m.auc.toFixed(4)}   baseline (ad CTR alone) ${m.baseline_auc.toFixed(4)}`);
  say(`log loss               ${m.logloss.toFixed(5)}  baseline ${m.baseline_logloss.toFixed(5)}`);
  if (lightgbm)
    say(
      `LightGBM (Python)      AUC ${lightgbm.lightgbm.auc.toFixed(4)}, log loss ${lightgbm.lightgbm.logloss.toFixed(5)} on the same ${fmt(lightgbm.lightgbm.rows)} held-out rows`,
    );
  say(`parity mismatches      ${parity.mismatches}`);
  say(`held-out requests      ${fmt(scored.requests)} scored, p99 ${scored.p99.toFixed(2)} ms`);
  say(`total                  ${seconds.toFixed(1)} s`);

  if (!opts.serve) {
    await models.stop();
    return;
  }
  const app = await buildServer(
    { ranker, metrics, log, models, storeProblem: () => null },
    { maxCandidates: config.maxCandidates, bodyLimit: 1 << 20, token: config.scoringToken },
  );
  const address = await app.listen({ port, host: '127.0.0.1' });
  const sample = scored.sample;
  const body = JSON.stringify({
    request_id: 'demo-1',
    user_id: sample.user_id,
    publisher_id: sample.publisher_id,
    device: sample.device,
    os: sample.os,
    time: sample.event_time,
    candidates: sample.candidates.slice(0, 3),
  });
  // The live parity check over the stream's history so far, then following the live traffic (as `stream --verify`).
  const live = await openLiveParity(ch, {
    config,
    features,
    eventLog: stream.eventLog,
    checkpoints: stream.checkpoints,
    allowedLatenessMs: HOUR,
    sample: 1,
    fresh: true,
    log,
  });
  const stopChecking = new AbortController();
  const checking = live.parity
    .follow({ intervalMs: 1000, flushMs: 5000, signal: stopChecking.signal })
    .catch((err: Error) => log.error({ err: err.message }, 'live parity stopped'));
  // The console, in this process: the embedded online store, checkpoints and ClickHouse live here.
  const letters = new DeadLetterWatch(stream.eventLog, config.namespace);
  const web = await startConsole(
    {
      features,
      registry,
      offline: ch,
      online: stream.online,
      deadLetters: () => letters.summary(),
      about: { mode: 'demo (embedded)', namespace: config.namespace, sources: ['stream', 'serve', 'verify'] },
      log,
    },
    {
      progress: () =>
        partitionProgress(stream.eventLog, stream.checkpoints, Object.values(sourceTopics(config.namespace))),
      metrics: [
        registrySource('stream', stream.metrics.registry),
        registrySource('serve', metrics.registry),
        registrySource('verify', live.metrics.registry),
      ],
    },
    { port: consolePort, host: '127.0.0.1', token: config.scoringToken },
  );
  const stopTraffic =
    liveRate > 0
      ? await startLiveTraffic({
          config,
          eventLog: stream.eventLog,
          rankUrl: address,
          token: config.scoringToken,
          impressionsPerSecond: liveRate,
          candidates: Math.min(candidates, 5),
          log,
        })
      : async () => {};
  say(`\nserving /v1/rank at ${address} (Ctrl-C to stop). Try:`);
  say(
    `  curl -s ${address}/v1/rank -H 'content-type: application/json' ${config.scoringToken ? `-H 'authorization: Bearer $TRIBUTARY_SCORING_TOKEN' ` : ''}-d '${body}'`,
  );
  say(
    `console at ${web.url}${liveRate > 0 ? ` (live traffic: about ${liveRate} impressions/s appended to the log and ranked)` : ''}`,
  );
  await new Promise<void>((done) => {
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  await stopTraffic();
  stopChecking.abort();
  await checking;
  await web.close();
  await app.close();
  await stream.close();
  await ch.close();
  await models.stop();
}

function portFree(port: number): Promise<boolean> {
  if (port === 0) return Promise.resolve(true);
  return new Promise((done) => {
    const probe = createServer()
      .once('error', () => done(false))
      .listen(port, '127.0.0.1', () => probe.close(() => done(true)));
  });
}

async function scalar(ch: Awaited<ReturnType<typeof openClickHouse>>, query: string): Promise<number> {
  const rows = await (await ch.query({ query, format: 'JSONEachRow' })).json<Record<string, string>>();
  return Number(Object.values(rows[0] ?? {})[0] ?? 0);
}

/**
 * Ranks every request of the held-out period at its own moment (by pCTR: bids left out) and checks where the ad
 * that was shown and then clicked lands among its candidates.
 */
/** The log's records in runs of one hour of ingestion time, in log order. */
function* byHour(records: ReturnType<typeof generate>) {
  let run: typeof records = [];
  for (const r of records) {
    const first = run[0];
    if (first && Math.floor(r.ingestTime / HOUR) !== Math.floor(first.ingestTime / HOUR)) {
      yield run;
      run = [];
    }
    run.push(r);
  }
  if (run.length > 0) yield run;
}

async function scoreHeldOut(ranker: Ranker, records: ReturnType<typeof generate>, from: number) {
  const clicked = new Set<string>();
  const shown = new Map<string, AdImpression>();
  const requests: AdRequest[] = [];
  for (const { record } of records) {
    if (record.kind === 'click') clicked.add(record.event.impression_id);
    else if (record.kind === 'impression' && record.event.request_id) shown.set(record.event.request_id, record.event);
    else if (record.kind === 'request' && record.event.event_time >= from) requests.push(record.event);
  }
  const latencies: number[] = [];
  let clicks = 0;
  let top = 0;
  for (const req of requests) {
    const t = performance.now();
    const ranking = await ranker.rank({ ...req, candidates: req.candidates.map((c) => ({ ...c, bid: null })) });
    latencies.push(performance.now() - t);
    const imp = shown.get(req.request_id);
    if (!imp || !clicked.has(imp.event_id)) continue;
    clicks++;
    const rank = ranking.ranked.find((c) => c.ad_id === imp.ad_id)?.rank ?? Number.POSITIVE_INFINITY;
    if (rank <= Math.max(1, Math.ceil(req.candidates.length / 10))) top++;
  }
  latencies.sort((a, b) => a - b);
  const sample = requests.at(-1);
  if (!sample) throw new Error('no ad requests in the held-out period: generate more days');
  return {
    requests: requests.length,
    p50: quantile(latencies, 0.5),
    p99: quantile(latencies, 0.99),
    clickedTopDecile: clicks ? top / clicks : 0,
    sample,
  };
}
