// deploy/'s monitoring against the code and Debian's promtool: the alert rules load and each fires on series that
// should fire it and only then (alerts.test.yaml); every dashboard query parses as PromQL; and every tributary_*
// metric the rules and the dashboard name is one the stream, scoring or parity registries export. A renamed metric
// fails here, not in an empty panel or an alert that can never fire.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ParityMetrics } from '../../src/backfill/parity-metrics.ts';
import { ScoringMetrics } from '../../src/scoring/metrics.ts';
import { StreamMetrics } from '../../src/streams/metrics.ts';

const DEPLOY = join(import.meta.dirname, '../../deploy');
const RULES = join(DEPLOY, 'prometheus/alerts.yaml');
const rulesText = readFileSync(RULES, 'utf8');
const dashboardText = readFileSync(join(DEPLOY, 'grafana/tributary.json'), 'utf8');

// biome-ignore lint/suspicious/noExplicitAny: parsed JSON/YAML, navigated by shape; the assertions are the checks
type Doc = Record<string, any>;
const dashboard = JSON.parse(dashboardText) as Doc;
const queries: { panel: string; expr: string }[] = dashboard.panels
  .filter((p: Doc) => p.type !== 'row')
  .flatMap((p: Doc) => p.targets.map((t: Doc) => ({ panel: p.title, expr: t.expr })));
const alerts: Doc[] = (parse(rulesText) as Doc).groups.flatMap((g: Doc) => g.rules);

function promtool(...args: string[]) {
  const r = spawnSync('promtool', args, { encoding: 'utf8' });
  if (r.error) throw new Error(`promtool: ${r.error.message} (Debian's prometheus package; .ci/run installs it)`);
  return r;
}

/** Every series name the registries export: histograms as their _bucket, _count and _sum series. */
async function exported(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const { registry } of [new StreamMetrics(), new ScoringMetrics(), new ParityMetrics()])
    for (const m of await registry.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === 'histogram') for (const s of ['_bucket', '_count', '_sum']) names.add(m.name + s);
      if (String(m.type) === 'summary') for (const s of ['_count', '_sum']) names.add(m.name + s);
    }
  return names;
}

const named = (text: string) => new Set(text.match(/\btributary_[a-z0-9_]+/g));

describe('deploy/ monitoring', () => {
  it('has alert rules promtool loads, each firing on what should fire it and quiet otherwise', () => {
    const check = promtool('check', 'rules', RULES);
    expect(check.status, check.stdout + check.stderr).toBe(0);
    const test = promtool('test', 'rules', join(DEPLOY, 'prometheus/alerts.test.yaml'));
    expect(test.status, test.stdout + test.stderr).toBe(0);
    // Every alert is exercised by the rules test, and says what to do.
    const tested = readFileSync(join(DEPLOY, 'prometheus/alerts.test.yaml'), 'utf8');
    for (const a of alerts) {
      expect(tested, a.alert).toMatch(new RegExp(`alertname: ${a.alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`));
      expect(a.annotations.summary, a.alert).toBeTruthy();
      expect(a.annotations.description.length, a.alert).toBeGreaterThan(80);
      expect(['warning', 'critical'], a.alert).toContain(a.labels.severity);
    }
    const config = promtool('check', 'config', join(DEPLOY, 'prometheus/prometheus.yml'));
    expect(config.status, config.stdout + config.stderr).toBe(0);
  });

  it('has a dashboard whose every query parses as PromQL, on its Prometheus datasource variable', () => {
    const variable = dashboard.templating.list.find((v: Doc) => v.type === 'datasource');
    expect(variable).toMatchObject({ name: 'datasource', query: 'prometheus' });
    for (const p of dashboard.panels.filter((x: Doc) => x.type !== 'row')) {
      // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets.length, p.title).toBeGreaterThan(0);
    }
    expect(new Set(dashboard.panels.map((p: Doc) => p.id)).size).toBe(dashboard.panels.length);
    // promtool parses PromQL only in rule files: each query as a recording rule, Grafana's interval filled in.
    const file = join(mkdtempSync(join(tmpdir(), 'dashboard-')), 'queries.yaml');
    const rules = queries.map((q, i) => ({
      record: `dashboard:query_${i}`,
      expr: q.expr.replaceAll('$__rate_interval', '5m'),
    }));
    writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
    const check = promtool('check', 'rules', file);
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it('names only metrics the stream, scoring and parity registries export', async () => {
    const exists = await exported();
    const inRules = named(rulesText);
    const inDashboard = named(dashboardText);
    // What the issue asks each to cover (and proof the names were found at all).
    for (const m of [
      'tributary_stream_consumer_lag',
      'tributary_stream_freshness_seconds',
      'tributary_parity_mismatches_total',
      'tributary_rank_request_seconds_bucket',
    ])
      expect(inRules, m).toContain(m);
    for (const m of [
      'tributary_stream_events_total',
      'tributary_stream_dead_letters_total',
      'tributary_stream_batch_seconds_bucket',
      'tributary_stream_sink_retries_total',
      'tributary_rank_stage_seconds_bucket',
      'tributary_rankings_total',
      'tributary_model_info',
      'tributary_parity_checked_total',
    ])
      expect(inDashboard, m).toContain(m);
    expect(
      [...inRules].filter((m) => !exists.has(m)),
      'in alerts.yaml',
    ).toEqual([]);
    expect(
      [...inDashboard].filter((m) => !exists.has(m)),
      'in tributary.json',
    ).toEqual([]);
  });
});
