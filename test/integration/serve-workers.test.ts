// `tributary serve --workers 2` on real Valkey with a model trained by the real backfill + `train`: requests on
// fresh connections reach both workers and all succeed; /metrics on either worker counts every ranking of both;
// each worker keeps its own served-vector log; a worker killed outright is replaced while the others serve; and
// SIGTERM stops the primary and every worker cleanly.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { generate } from '../../src/events/generator.ts';
import type { AdImpression } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { ModelRegistry } from '../../src/model/registry.ts';
import { rankBody, replayRecords, trainAndRegister } from '../support/models.ts';
import { freePort, VALKEY_URL } from '../support/services.ts';
import { until } from '../support/streaming.ts';

const dir = mkdtempSync(join(tmpdir(), 'serve-workers-'));
const registry = new ModelRegistry(join(dir, 'models'));
const log = generate({ seed: 5, days: 1, impressionsPerDay: 3000 });
const impressions = log.filter((r) => r.record.kind === 'impression').map((r) => r.record.event as AdImpression);
let server: ChildProcess;
let port = 0;
let stderr = '';

/** One request on its own connection (no keep-alive), so the cluster hands each to the next worker. */
function post(body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/v1/rank', method: 'POST', agent: false }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.setHeader('content-type', 'application/json');
    req.end(body);
  });
}

const body = (i: number) => {
  const at = impressions[(i * 7919) % impressions.length] as AdImpression;
  return JSON.stringify(rankBody(`w-${i}`, at, impressions.slice(i, i + 5), at.event_time));
};

const rankings = async () => {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  // From the store or defaults (a cold worker on a busy machine may miss the read budget): every ranking.
  return [...text.matchAll(/^tributary_rankings_total\{features="\w+"\} (\S+)/gm)].reduce(
    (n, m) => n + Number(m[1]),
    0,
  );
};
const servedLines = () =>
  [1, 2].flatMap((n) => {
    const file = join(dir, `served.${n}.ndjson`);
    return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
  });
const workerPids = () => [...stderr.matchAll(/"pid":(\d+)[^\n]*"msg":"serving"/g)].map((m) => Number(m[1]));

beforeAll(async () => {
  await registry.promote(await trainAndRegister(registry, new FeatureSet(DEFAULT_GROUPS), replayRecords(log), 1));
  port = await freePort();
  // biome-ignore format: one argument per flag reads best
  server = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--workers', '2',
    '--valkey', VALKEY_URL, '--namespace', `workers${Date.now()}.`, '--models', registry.dir, '--port', String(port),
    '--sample-rate', '1', '--served-log', join(dir, 'served.ndjson')], { stdio: ['ignore', 'ignore', 'pipe'] });
  server.stderr?.on('data', (c) => (stderr += c));
  const ready = async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status === 200;
  await until('both workers serving', async () => workerPids().length === 2 && (await ready()), 60_000);
}, 120_000);

afterAll(() => {
  if (server.exitCode === null) server.kill('SIGKILL');
});

it('spreads rankings over the workers, counts them all in /metrics, and logs each worker apart', async () => {
  const before = await rankings();
  const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => post(body(i))));
  expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200));
  // Any worker's /metrics sums both: a worker's own count would be about half.
  expect((await rankings()) - before).toBe(40);
  // Every worker served: each appends its served vectors to its own file (flushed within a second).
  await until('both served logs', () => servedLines().length === 40, 10_000);
  expect([1, 2].every((n) => existsSync(join(dir, `served.${n}.ndjson`)))).toBe(true);
});

it('replaces a worker killed outright, serving meanwhile', async () => {
  const [victim] = workerPids();
  process.kill(victim as number, 'SIGKILL');
  await until('a replacement worker', () => workerPids().length === 3, 60_000);
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => post(body(i))));
  expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200));
  expect(stderr).toContain('serve worker died; starting another');
}, 90_000);

it('stops the primary and every worker on SIGTERM, flushing their served logs', async () => {
  const exited = new Promise<number | null>((resolve) => server.once('exit', resolve));
  server.kill('SIGTERM');
  expect(await exited).toBe(0);
  const alive = workerPids().filter((pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  });
  expect(alive).toEqual([]);
  // Every ranking since the kill was flushed by the workers' clean stop.
  expect(servedLines().length).toBe(60);
}, 30_000);
