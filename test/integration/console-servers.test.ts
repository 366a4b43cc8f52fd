// `tributary console` on real servers: Kafka + Schema Registry + Valkey (the running services, a namespace of its
// own) and ClickHouse through the HTTP stand-in (test/support/clickhouse-http.ts). A `tributary stream` process
// (recording served vectors, checking them live) applies a published scenario with bad records, `tributary parity`
// runs once, two models are trained into a registry and `tributary serve` ranks with one. The real console process
// then must show, through its JSON API and one page in Debian's Chromium: every partition caught up at the log's
// ends, dead letters whose counts are the stream's metric, an ad's history equal to Valkey's values, parity in both
// forms, the served model, /v1/rank traffic; and promote needs the token.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { Valkey } from 'iovalkey';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { byLabel, parseMetrics } from '../../src/console/metrics-source.ts';
import { topicOf } from '../../src/events/catalog.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AdImpression, EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { ModelRegistry } from '../../src/model/registry.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import { ValkeyStore } from '../../src/online/valkey-store.ts';
import { sourceTopics } from '../../src/streams/processor.ts';
import { type ClickHouseHttpStandIn, startClickHouseHttp } from '../support/clickhouse-http.ts';
import { rankBody, replayRecords, trainAndRegister } from '../support/models.ts';
import { freePort, KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import { exited, parity } from '../support/stream-runs.ts';
import { caughtUp, publishScenario, until } from '../support/streaming.ts';

const TOKEN = 'console-servers-token';
const SCRAPE_PASSWORD = 'scrape-secret-7f3a';
const ns = `cs${Date.now()}.`;
const kafka = createKafka(KAFKA_BROKERS);
const valkey = new Valkey(VALKEY_URL);
const features = new FeatureSet(DEFAULT_GROUPS);
const dir = mkdtempSync(join(tmpdir(), 'console-servers-'));
const registry = new ModelRegistry(join(dir, 'models'));
const children = new Set<ChildProcess>();
let http: ClickHouseHttpStandIn;
let ch: ClickHouseClient;
let impressions: AdImpression[];
let versions: [string, string];
let streamMetrics: string;
let serveUrl: string;
let consoleUrl: string;
let consoleChild: ChildProcess;

/** A `tributary` process on the test servers under the namespace; the scoring token only where passed. */
function cli(args: string[]) {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TRIBUTARY_KAFKA: KAFKA_BROKERS.join(','),
    TRIBUTARY_SCHEMA_REGISTRY: REGISTRY_URL,
    TRIBUTARY_VALKEY: VALKEY_URL,
    TRIBUTARY_CLICKHOUSE: http.url,
    TRIBUTARY_LOG_LEVEL: 'warn',
  };
  delete env.TRIBUTARY_SCORING_TOKEN;
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', '--namespace', ns, ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (b: Buffer) => {
    out.stdout += b;
  });
  child.stderr.on('data', (b: Buffer) => {
    out.stderr += b;
  });
  void exited(child).then(() => children.delete(child));
  return { child, out };
}

const rows = async <T>(query: string) =>
  (
    await ch.query({
      query,
      format: 'JSONEachRow',
      clickhouse_settings: { output_format_json_quote_64bit_integers: 0 },
    })
  ).json<T>();

const api = async (path: string, init?: RequestInit) => {
  const res = await fetch(`${consoleUrl}${path}`, init);
  // biome-ignore lint/suspicious/noExplicitAny: the API's JSON, read field by field
  return { status: res.status, body: (await res.json()) as any };
};

beforeAll(async () => {
  http = await startClickHouseHttp(dir);
  ch = await openClickHouse({ url: http.url, dir });
  const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
  await serde.prepare(EVENT_KINDS);
  const { log } = await publishScenario(kafka, serde, ns, {
    seed: 23,
    days: 1,
    impressionsPerDay: 2000,
    ads: 40,
    lateShare: 0.03,
    duplicateShare: 0.02,
  });
  impressions = log.flatMap((r) => (r.record.kind === 'impression' ? [r.record.event] : []));

  // The stream keeps running (the console scrapes it) once it has applied the log and checked what it served.
  const streamPort = await freePort();
  const stream = cli([
    'stream',
    '--max-batch',
    '500',
    '--record-served',
    '--verify',
    '--verify-flush',
    '1s',
    '--metrics-port',
    String(streamPort),
  ]);
  const alive = () => {
    if (stream.child.exitCode !== null) throw new Error(`the stream exited: ${stream.out.stderr.slice(-2000)}`);
  };
  await until('the stream to catch up', async () => {
    alive();
    return caughtUp(kafka, valkey, ns, `${ns}tributary-stream`);
  });
  const settled = Number(await valkey.get(`tb:{seq|${ns}tributary-stream}`));
  await until('the live check to reach the stream', async () => {
    alive();
    const [r] = await rows<{ last: number | null }>('SELECT max(last_batch_seq) AS last FROM parity_live').catch(() => [
      { last: null },
    ]);
    return (r?.last ?? 0) >= settled;
  });
  streamMetrics = `http://127.0.0.1:${streamPort}/metrics`;

  const batch = await parity({ url: http.url });
  expect(batch.line).toMatch(/mismatches 0 /);

  const records = replayRecords(log);
  versions = [
    await trainAndRegister(registry, features, records, 1),
    await trainAndRegister(registry, features, records, 5),
  ];
  await registry.promote(versions[0]);

  const servePort = await freePort();
  serveUrl = `http://127.0.0.1:${servePort}`;
  const serve = cli(['serve', '--models', registry.dir, '--port', String(servePort)]);
  await until(
    'serve to be ready',
    async () => {
      if (serve.child.exitCode !== null) throw new Error(`serve exited: ${serve.out.stderr.slice(-2000)}`);
      return (await fetch(`${serveUrl}/readyz`).catch(() => null))?.status === 200;
    },
    60_000,
  );

  const consoleProcess = cli([
    'console',
    '--models',
    registry.dir,
    '--scrape',
    // With credentials, as a scrape behind a proxy would be: sent as Basic auth, never shown.
    `${serveUrl.replace('://', `://scraper:${SCRAPE_PASSWORD}@`)}/metrics`,
    streamMetrics,
    '--token',
    TOKEN,
    '--port',
    '0',
    '--interval',
    '500',
  ]);
  consoleChild = consoleProcess.child;
  await until(
    'the console to print its URL',
    () => {
      if (consoleProcess.child.exitCode !== null)
        throw new Error(`the console exited: ${consoleProcess.out.stderr.slice(-2000)}`);
      const m = /^console at (\S+)/m.exec(consoleProcess.out.stdout);
      consoleUrl = m?.[1] ?? '';
      return consoleUrl !== '';
    },
    60_000,
  );
}, 180_000);

afterAll(async () => {
  for (const c of children) c.kill('SIGTERM');
  await Promise.all([...children].map(exited));
  valkey.disconnect();
  await ch?.close();
  await http?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('tributary console on real servers', () => {
  it('Pipeline: every source partition caught up at the log ends; dead letters as the stream counted them', async () => {
    const { body } = await api('/api/pipeline');
    expect(body.problem).toBeNull();
    const admin = kafka.admin();
    await admin.connect();
    const ends: Record<string, number> = {};
    try {
      for (const topic of Object.values(sourceTopics(ns)))
        for (const p of await admin.fetchTopicOffsets(topic)) ends[`${topic}/${p.partition}`] = Number(p.high);
    } finally {
      await admin.disconnect();
    }
    const shown = Object.fromEntries(
      (body.partitions as { topic: string; partition: number; next: number; end: number; lag: number }[]).map((p) => [
        `${p.topic}/${p.partition}`,
        { next: p.next, end: p.end, lag: p.lag },
      ]),
    );
    expect(Object.keys(ends).length).toBeGreaterThanOrEqual(6);
    expect(shown).toEqual(Object.fromEntries(Object.entries(ends).map(([k, end]) => [k, { next: end, end, lag: 0 }])));
    for (const p of body.partitions) expect(p.freshnessSeconds).toBeGreaterThan(0);

    // Dead letters read from the topic, by reason, each count the stream's metric for it.
    expect(body.deadLetters.problem).toBeUndefined();
    const reasons = body.deadLetters.reasons as { reasonClass: string; count: number; examples: unknown[] }[];
    const metric = byLabel(
      parseMetrics(await (await fetch(streamMetrics)).text(), 'stream'),
      'tributary_stream_dead_letters_total',
      'reason',
    );
    const counted = Object.fromEntries(Object.entries(metric).filter(([, n]) => n > 0));
    expect(Object.fromEntries(reasons.map((r) => [r.reasonClass, r.count]))).toEqual(counted);
    expect(Object.keys(counted)).toEqual(expect.arrayContaining(['late', 'unknown schema id']));
    for (const r of reasons) expect(r.examples.length).toBe(Math.min(3, r.count));
  });

  it('Pipeline: dead letters the running stream sends later appear, counted as its metric counts them', async () => {
    const byReason = async () =>
      Object.fromEntries(
        ((await api('/api/pipeline')).body.deadLetters.reasons as { reasonClass: string; count: number }[]).map((r) => [
          r.reasonClass,
          r.count,
        ]),
      );
    const metric = async () =>
      byLabel(
        parseMetrics(await (await fetch(streamMetrics)).text(), 'stream'),
        'tributary_stream_dead_letters_total',
        'reason',
      );
    const before = await byReason();
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({
      topic: topicOf('impression', ns),
      messages: [0, 1].map((i) => ({ key: `later-${i}`, value: Buffer.from('not avro either') })),
    });
    await producer.disconnect();
    const magic = 'unknown magic byte';
    await expect
      .poll(byReason, { timeout: 30_000, interval: 500 })
      .toMatchObject({ [magic]: (before[magic] ?? 0) + 2 });
    expect(await byReason()).toEqual(Object.fromEntries(Object.entries(await metric()).filter(([, n]) => n > 0)));
  });

  it("Features: an ad's history at its last event equals the online store's values in Valkey", async () => {
    const counts = new Map<string, number>();
    for (const i of impressions) counts.set(i.ad_id, (counts.get(i.ad_id) ?? 0) + 1);
    const ad = [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] as string;
    const { status, body } = await api(`/api/features/history?entity=ad&key=${ad}`);
    expect(status, JSON.stringify(body)).toBe(200);
    expect(body.events).toBeGreaterThan(0);
    expect(body.onlineProblem).toBeNull();
    const at = (body.last as number) + 1;
    const { body: atLast } = await api(`/api/features/history?entity=ad&key=${ad}&at=${at}`);
    const names = atLast.features as string[];
    // Valkey read here, apart from the console: the ad's slice of a vector read at that moment.
    const store = new ValkeyStore(valkey, {
      features,
      namespace: ns,
      ttlSeconds: 0,
      retentionMs: features.retentionMs,
    });
    const context = impressions.find((i) => i.ad_id === ad) as AdImpression;
    const plan = features.plan([context], at);
    const [vector] = features.assemble(plan, await store.read(plan.requests));
    const fromValkey = names.map((n) => (vector as Float64Array)[features.names.indexOf(n)]);
    expect(atLast.online).toEqual(fromValkey);
    const offline = atLast.atValues as number[];
    for (const [i, v] of fromValkey.entries())
      expect(Math.abs((v as number) - (offline[i] as number)), names[i]).toBeLessThanOrEqual(
        1e-9 * Math.max(1, Math.abs(v as number)),
      );
    // Not a vector of defaults: the ad's events are in it (a read sees complete tiles only, so not every window yet).
    expect(
      fromValkey.some((v, i) => v !== features.features[features.names.indexOf(names[i] as string)]?.default),
    ).toBe(true);
  });

  it('Parity: the last run in parity and the live check with checked values', async () => {
    const { body } = await api('/api/parity');
    expect(body.last).toMatchObject({ mismatches: 0, missingServed: 0 });
    expect(body.last.impressions).toBeGreaterThan(1000);
    expect(body.last.byFeature.length).toBe(features.names.length);
    expect(body.live.checked).toBeGreaterThan(0);
    expect(body.live.mismatches).toBe(0);
    expect((body.live.intervals as { checked: number }[]).some((i) => i.checked > 0)).toBe(true);
  });

  it('Models and Serving: the registered version current and served; /v1/rank traffic; promote needs the token', async () => {
    const [first, second] = versions;
    let { body } = await api('/api/models');
    expect(body.current).toBe(first);
    expect(body.models.map((m: { version: string }) => m.version).sort()).toEqual([...versions].sort());

    const sample = impressions.slice(-40);
    for (let i = 0; i < 8; i++) {
      const at = sample[i * 5] as AdImpression;
      const res = await fetch(`${serveUrl}/v1/rank`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(rankBody(`cs-${i}`, at, sample.slice(i, i + 5), at.event_time)),
      });
      expect(res.status, await res.text()).toBe(200);
    }
    await expect
      .poll(
        async () => {
          const s = (await api('/api/serving')).body;
          return {
            rate: (s.points as { requestsPerSecond: number | null }[]).some((p) => (p.requestsPerSecond ?? 0) > 0),
            versions: s.modelVersions,
          };
        },
        { timeout: 15_000, interval: 500 },
      )
      .toEqual({ rate: true, versions: [first] });
    ({ body } = await api('/api/models'));
    expect(body.models.find((m: { version: string }) => m.version === first).servedBy).toEqual([`${serveUrl}/metrics`]);

    const promote = (headers: Record<string, string>) =>
      api(`/api/models/${second}/promote`, { method: 'POST', headers });
    expect((await promote({})).status).toBe(401);
    expect((await promote({ authorization: 'Bearer wrong' })).status).toBe(401);
    expect((await api('/api/models')).body.current).toBe(first);
    const done = await promote({ authorization: `Bearer ${TOKEN}` });
    expect(done.status).toBe(200);
    expect(done.body).toEqual({ current: second, previous: first });
    // The serve process follows the registry: the console shows the new version served.
    await expect
      .poll(async () => (await api('/api/serving')).body.modelVersions, { timeout: 15_000, interval: 500 })
      .toEqual([second]);
  });

  it('shows no secret: neither the token nor the scrape password is in any page or API answer', async () => {
    const paths = ['/', '/pipeline', '/features', '/parity', '/models', '/serving'];
    const apis = ['overview', 'pipeline', 'features', 'parity', 'models', 'serving'].map((p) => `/api/${p}`);
    for (const path of [...paths, ...apis]) {
      const res = await fetch(`${consoleUrl}${path}`);
      expect(res.status, path).toBe(200);
      const body = await res.text();
      expect(body, path).not.toContain(TOKEN);
      expect(body, path).not.toContain(SCRAPE_PASSWORD);
    }
    // The serve process was scraped through the URL with credentials: its model version is there.
    expect((await api('/api/serving')).body.modelVersions).toHaveLength(1);
  });

  it('one page in Chromium: the Pipeline with every partition and the dead letters', async () => {
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      const problems: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') problems.push(`console: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('response', (r) => {
        if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
      });
      await page.goto(`${consoleUrl}/pipeline`);
      await page.locator('h2', { hasText: 'Examples' }).waitFor();
      const text = (await page.locator('main').textContent()) ?? '';
      for (const topic of Object.values(sourceTopics(ns))) expect(text).toContain(topic);
      expect(text).toContain('From the dead-letter topic');
      expect(text).toMatch(/unknown schema id/);
      const shots = resolve('.data/console-screenshots');
      mkdirSync(shots, { recursive: true });
      await page.screenshot({ path: join(shots, 'pipeline-servers.png'), fullPage: true });
      expect(problems).toEqual([]);
    } finally {
      await browser.close();
    }
  });

  it('stops on SIGTERM, its connections to the servers closed', async () => {
    consoleChild.kill('SIGTERM');
    await exited(consoleChild);
    expect(consoleChild.exitCode).toBe(0);
  });
});
