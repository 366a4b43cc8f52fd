// Serving: /v1/rank's request rate, latency (histogram and quantiles over time), default-flagged share, stage
// timings and the model in service, from the serve processes' metrics sampled by the console.
import { api, bars, cards, chart, el, empty, errorBox, fmt, poll, prose } from './ui.js';

export async function render(main, about) {
  main.append(
    el('h1', {}, 'Serving'),
    prose(
      'p',
      '`POST /v1/rank` as the serve processes count it (`tributary_rank_request_seconds`, `tributary_rankings_total`, `tributary_rank_stage_seconds`, `tributary_model_info`), sampled every few seconds: rates and quantiles are over each sampling interval; the histogram counts every request since the processes started. `defaults` = rankings answered with default features because the online store did not answer in time.',
      'lede',
    ),
  );
  const status = el('div');
  const summary = el('div');
  const rate = chart('Requests per second', [{ label: 'all' }, { label: '5xx', color: '#c2362b' }], {
    y: 'requests / s',
    id: 'rate',
  });
  const latency = chart('Latency per interval', [{ label: 'p50' }, { label: 'p99' }], { y: 'ms', id: 'latency' });
  const share = chart('Rankings on default features', [{ label: 'share' }], { y: 'share of rankings', id: 'defaults' });
  const stages = chart(
    'Mean time per ranking by stage',
    [{ label: 'valkey' }, { label: 'assembly' }, { label: 'onnx' }],
    { y: 'ms', id: 'stages' },
  );
  const hist = chart('Latency histogram (since start)', [{ label: 'requests', paths: bars(), fill: '#2f6fdf55' }], {
    x: 'seconds (bucket upper bound)',
    y: 'requests',
    id: 'histogram',
    xScale: { distr: 3 },
  });
  const grid = el('div', { class: 'charts' }, rate.box, latency.box, hist.box, share.box, stages.box);
  main.append(status, summary, grid);
  poll(
    about.intervalMs,
    async () => {
      const d = await api('/api/serving');
      status.replaceChildren(...d.problems.map((p) => errorBox(`metrics from ${p.source}: ${p.reason}`)));
      const last = d.points.at(-1) ?? {};
      const totalRequests = Object.values(d.byCode).reduce((a, b) => a + b, 0);
      summary.replaceChildren(
        cards([
          ['model in service', d.modelVersions.join(', ') || '–', 'model'],
          ['requests since start', fmt.int(totalRequests), 'requests'],
          ['requests / s', fmt.fixed(last.requestsPerSecond, 1), 'rate'],
          ['p50 / p99 (interval)', `${fmt.fixed(last.p50Ms, 2)} / ${fmt.fixed(last.p99Ms, 2)} ms`, 'latency'],
          ['on defaults (interval)', fmt.pct(last.defaultShare), 'defaults'],
          [
            'by status',
            Object.entries(d.byCode)
              .map(([k, v]) => `${k} ${fmt.int(v)}`)
              .join(' · ') || '–',
            'codes',
          ],
        ]),
      );
      if (!totalRequests && !d.problems.length && !status.childElementCount)
        status.append(
          empty(
            'no /v1/rank requests seen yet: send one (`npm start` prints a sample) or pass `--scrape http://HOST:PORT/metrics` of a `tributary serve`',
          ),
        );
      const xs = d.points.map((p) => p.at / 1000);
      rate.set([xs, d.points.map((p) => p.requestsPerSecond), d.points.map((p) => p.errorsPerSecond)]);
      latency.set([xs, d.points.map((p) => p.p50Ms), d.points.map((p) => p.p99Ms)]);
      share.set([xs, d.points.map((p) => p.defaultShare)]);
      stages.set([xs, ...['valkey', 'assembly', 'onnx'].map((s) => d.points.map((p) => p.stageMs[s]))]);
      const finite = d.histogram.filter((b) => b.le !== null);
      hist.set([finite.map((b) => b.le), finite.map((b) => b.count)]);
    },
    (err) => status.replaceChildren(errorBox(err)),
  );
}
