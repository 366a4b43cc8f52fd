// The console in a real browser: a small demo (its own process, embedded defaults, live traffic after the report)
// serves it; Debian's Chromium, driven by playwright-core, loads each page and must find real data, charts holding
// points, and no console error or failed request. Screenshots go to .data/console-screenshots/. The JSON API is
// fuzzed for 4xx-with-a-reason answers, and promote / roll back need the scoring token.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { embeddedEnv } from '../support/services.ts';

const TOKEN = 'console-test-token';
const dir = mkdtempSync(join(tmpdir(), 'tributary-console-'));
const shots = resolve('.data/console-screenshots');
const env = embeddedEnv({
  TRIBUTARY_NAMESPACE: '',
  TRIBUTARY_SCORING_TOKEN: TOKEN,
});
const cli = ['--import', 'tsx', 'src/cli/main.ts'];

let demo: ChildProcess;
let exited: Promise<number | null>;
let url = '';
let browser: Browser;

beforeAll(async () => {
  demo = spawn(
    process.execPath,
    [
      ...cli,
      'demo',
      '--days',
      '2',
      '--impressions-per-day',
      '3000',
      '--candidates',
      '5',
      '--out',
      join(dir, 'demo'),
      '--port',
      '0',
      '--console-port',
      '0',
      '--live-rate',
      '6',
    ],
    { env },
  );
  let stdout = '';
  let stderr = '';
  demo.stderr?.on('data', (d) => {
    stderr += d;
  });
  exited = new Promise((done) => demo.on('close', done));
  url = await new Promise<string>((done, fail) => {
    demo.stdout?.on('data', (d) => {
      stdout += d;
      const m = /^console at (\S+)/m.exec(stdout);
      if (m) done(m[1] as string);
    });
    demo.on('close', (code) => fail(new Error(`demo exited (${code}) before serving: ${stderr.slice(-2000)}`)));
  });
  // A second model, so that promote and roll back have somewhere to go.
  const train = spawnSync(
    process.execPath,
    [
      ...cli,
      'train',
      '--training-set',
      join(dir, 'demo/training.csv'),
      '--l2',
      '0.5',
      '--models',
      join(dir, 'demo/models'),
    ],
    { env, encoding: 'utf8' },
  );
  expect(train.status, train.stderr).toBe(0);
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  mkdirSync(shots, { recursive: true });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  demo?.kill('SIGINT');
  expect(await exited).toBe(0);
});

const api = async (path: string, init?: RequestInit) => {
  const res = await fetch(`${url}${path}`, init);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> & { reason?: string } };
};

/** A page with every console error, uncaught exception and failed request recorded (`expected`: URLs allowed to fail). */
async function open(path: string, expected: RegExp[] = []) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const problems: string[] = [];
  const allowed = (u: string) => expected.some((e) => e.test(u));
  page.on('console', (m) => {
    if (m.type() === 'error' && !allowed(m.location().url)) problems.push(`console: ${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400 && !allowed(r.url())) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  await page.goto(`${url}${path}`);
  return { page, problems };
}

const points = (page: Page, id: string) =>
  page.locator(`[data-chart="${id}"]`).evaluate((e) => Number(e.getAttribute('data-points')));
const canvas = (page: Page, id: string) => page.locator(`[data-chart="${id}"] canvas`).count();

describe('tributary console', () => {
  it('Pipeline: partitions with live rates and the newest checkpoint, lag and rate charts', async () => {
    // Live traffic is flowing: some partition advances between two samples.
    await expect
      .poll(
        async () => {
          const { body } = await api('/api/pipeline');
          return (body.partitions as { eventsPerSecond: number | null }[]).some((p) => (p.eventsPerSecond ?? 0) > 0);
        },
        { timeout: 30_000, interval: 1000 },
      )
      .toBe(true);
    const { page, problems } = await open('/pipeline');
    const rows = page.locator('[data-table="partitions"] tbody tr, .scroll table tbody tr').first();
    await rows.waitFor();
    const text = await page.locator('main').textContent();
    for (const topic of ['ad_impressions', 'ad_clicks']) expect(text).toContain(topic);
    await expect.poll(() => points(page, 'lag'), { timeout: 15_000 }).toBeGreaterThan(2);
    expect(await canvas(page, 'rate')).toBeGreaterThan(0);
    const rate = Number(String(await page.locator('[data-card="rate"] .value').textContent()).replace(/,/g, ''));
    expect(Number.isNaN(rate)).toBe(false);
    expect(text).toMatch(/last checkpoint/);
    // Dead letters read from the dead-letter topic: by reason, with examples naming their source records.
    await page.locator('h2', { hasText: 'Examples' }).waitFor();
    const letters = await page.locator('main').textContent();
    expect(letters).toContain('From the dead-letter topic');
    expect(letters).toMatch(/ad_(impressions|clicks)\/\d+@\d+/);
    expect(letters).toMatch(/late: /);
    await page.screenshot({ path: join(shots, 'pipeline.png'), fullPage: true });
    expect(problems).toEqual([]);
    await page.close();
  });

  it("Features: the catalog, and an ad's history beside the online store, equal at the same moment", async () => {
    const { page, problems } = await open('/features?entity=ad&key=ad-0');
    await page.locator('[data-chart="ad__impressions_24h"][data-points]').waitFor({ timeout: 30_000 });
    expect(await points(page, 'ad__impressions_24h')).toBeGreaterThan(20);
    expect(await canvas(page, 'ad__ctr_7d')).toBeGreaterThan(0);
    const text = await page.locator('main').textContent();
    expect(text).toMatch(/58 features over 7 entities/);
    expect(text).toContain('user_category__ctr_7d');
    // The history (offline, through the engine) and the online store agree at the same moment; the live stream may
    // land a batch between the two reads, so a few tries.
    await expect
      .poll(
        async () => {
          const { body } = await api('/api/features/history?entity=ad&key=ad-0');
          const online = body.online as number[];
          const offline = body.atValues as number[];
          return (
            (body.events as number) > 0 &&
            online.every((v, i) => Math.abs(v - (offline[i] as number)) <= 1e-9 * Math.max(1, Math.abs(v)))
          );
        },
        { timeout: 20_000, interval: 500 },
      )
      .toBe(true);
    const { body } = await api('/api/features/history?entity=ad&key=ad-0');
    const names = body.features as string[];
    expect((body.online as number[])[names.indexOf('ad__impressions_7d')]).toBeGreaterThan(0);
    await page.screenshot({ path: join(shots, 'features.png'), fullPage: true });
    expect(problems).toEqual([]);
    await page.close();
  });

  it("Parity: the demo's batch run by feature, in parity, and the live check's intervals", async () => {
    // The live check (hosted by the demo) writes its first interval once it has gone over the history.
    await expect
      .poll(async () => ((await api('/api/parity')).body as { live: unknown }).live, { timeout: 30_000 })
      .toBeTruthy();
    const { page, problems } = await open('/parity');
    await page.locator('[data-parity="last"]').waitFor();
    expect(await page.locator('[data-parity="last"]').textContent()).toMatch(/in parity .* 0 mismatches/);
    expect(await page.locator('main').textContent()).toContain('ad__ctr_7d');
    await page.locator('[data-chart="live-checked"][data-points]').waitFor();
    expect(await points(page, 'live-checked')).toBeGreaterThan(0);
    expect(await page.locator('main').textContent()).toContain('none: every checked value equals its recomputation');
    await page.screenshot({ path: join(shots, 'parity.png'), fullPage: true });
    expect(problems).toEqual([]);
    await page.close();
  });

  it('Models: versions against the baseline, calibration, weights; promote refused without the token, done with it', async () => {
    const before = (await api('/api/models')).body as { current: string; models: { version: string }[] };
    // The demo's model and the test's second one (and the demo's LightGBM model when the example's venv exists).
    expect(before.models.length).toBeGreaterThanOrEqual(2);
    const other = before.models.find((m) => m.version !== before.current)?.version as string;
    const { page, problems } = await open('/models', [/\/api\/models\/[0-9a-f]{12}\/promote$/]);
    await page.locator('[data-chart="calibration"][data-points]').waitFor();
    expect(await points(page, 'calibration')).toBeGreaterThanOrEqual(10);
    // The weights are fetched after the versions are drawn.
    await page.getByText('ad__ctr_7d').first().waitFor();
    const text = await page.locator('main').textContent();
    expect(text).toMatch(/AUC/);
    expect(text).toContain('ad__ctr_7d');
    expect(text).toMatch(/served by/);
    // Without the token: refused, 401, and the page says so.
    await page.locator(`[data-promote="${other}"]`).click();
    await page.locator('[data-result="401"]').waitFor();
    expect((await api('/api/models')).body.current).toBe(before.current);
    // With it: done, and the registry's pointer moved.
    await page.locator('#token').fill(TOKEN);
    await page.locator(`[data-promote="${other}"]`).click();
    await page.locator('[data-result="ok"]').waitFor();
    expect((await api('/api/models')).body.current).toBe(other);
    await page.screenshot({ path: join(shots, 'models.png'), fullPage: true });
    expect(problems).toEqual([]);
    await page.close();
    const back = await api('/api/models/rollback', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(back.status).toBe(200);
    expect(back.body.current).toBe(before.current);
  });

  it('Serving: request rate, latency quantiles and histogram, default share, model version', async () => {
    const { page, problems } = await open('/serving');
    await expect.poll(() => points(page, 'rate'), { timeout: 15_000 }).toBeGreaterThan(2);
    await expect
      .poll(async () => ((await api('/api/serving')).body.histogram as { count: number }[]).some((b) => b.count > 0), {
        timeout: 20_000,
      })
      .toBe(true);
    await page.reload();
    await expect.poll(() => points(page, 'histogram'), { timeout: 10_000 }).toBeGreaterThan(3);
    const model = await page.locator('[data-card="model"] .value').textContent();
    expect(model).toMatch(/^[0-9a-f]{12}/);
    expect(await canvas(page, 'latency')).toBeGreaterThan(0);
    await page.screenshot({ path: join(shots, 'serving.png'), fullPage: true });
    expect(problems).toEqual([]);
    await page.close();
  });

  it('answers bad parameters with a 4xx and a reason, never a 5xx', async () => {
    const cases: [string, number, RegExp][] = [
      ['/api/features/history?entity=nope&key=ad-0', 400, /unknown entity "nope"/],
      ['/api/features/history?entity=user_category&key=u-1', 400, /malformed key .* user_id\|category/],
      ['/api/features/history?entity=ad&key=ad-0&from=2026-01-01&to=2026-06-01', 400, /time range too wide/],
      ['/api/features/history?entity=ad&key=ad-0&from=yesterday', 400, /from "yesterday" is not a time/],
      ['/api/features/history?entity=ad', 400, /key/],
      ['/api/features/history?entity=ad&key=ad-0&color=red', 400, /additional properties/],
      ['/api/models/xyz/weights', 400, /12 hex|pattern/],
      ['/api/models/0123456789ab/weights', 404, /no model 0123456789ab/],
      ['/api/nothing', 404, /no route/],
    ];
    for (const [path, status, reason] of cases) {
      const r = await api(path);
      expect(r.status, path).toBe(status);
      expect(r.body.reason, path).toMatch(reason);
    }
    const promote = (headers: Record<string, string>) =>
      api('/api/models/0123456789ab/promote', { method: 'POST', headers });
    expect((await promote({})).status).toBe(401);
    expect((await promote({ authorization: 'Bearer wrong' })).status).toBe(401);
    expect((await promote({ authorization: `Bearer ${TOKEN}` })).status).toBe(404);
    await fc.assert(
      fc.asyncProperty(
        fc.string({ maxLength: 30 }),
        fc.string({ maxLength: 40 }),
        fc.string({ maxLength: 12 }),
        async (entity, key, from) => {
          const q = new URLSearchParams({ entity, key, from });
          const r = await api(`/api/features/history?${q}`);
          expect(r.status, q.toString()).toBeLessThan(500);
          if (r.status >= 400) expect(typeof r.body.reason).toBe('string');
        },
      ),
      { numRuns: 40, seed: 18 },
    );
  });
});
