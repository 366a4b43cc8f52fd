// Models: registry versions with their evaluation against the baseline, calibration, weights; promote and roll back.
import { api, chart, el, empty, errorBox, fmt, prose, table } from './ui.js';

export async function render(main, about) {
  main.append(
    el('h1', {}, 'Models'),
    prose(
      'p',
      'Registered models (`tributary train`), evaluated on the latest part of their training set beside the baseline (the ad’s smoothed CTR alone). `current` is the registry’s pointer, which serve processes follow; `served by` lists the scraped processes reporting the version in service (`tributary_model_info`).',
      'lede',
    ),
  );
  const status = el('div', { id: 'model-status' });
  const body = el('div');
  main.append(status, body);
  const token = el('input', {
    type: 'password',
    id: 'token',
    size: 24,
    placeholder: 'scoring token',
    value: sessionStorage.getItem('tributary-token') ?? '',
  });
  token.addEventListener('change', () => sessionStorage.setItem('tributary-token', token.value));

  const write = async (path) => {
    status.replaceChildren();
    try {
      const r = await api(path, {
        method: 'POST',
        headers: token.value ? { authorization: `Bearer ${token.value}` } : {},
      });
      status.append(
        el(
          'p',
          { class: 'badge good', 'data-result': 'ok' },
          `current: ${r.current}${r.previous ? ` (was ${r.previous})` : ''}`,
        ),
      );
      await draw();
    } catch (err) {
      status.append(
        el(
          'div',
          { class: 'error', role: 'alert', 'data-result': String(err.status ?? 'error') },
          `refused (${err.status ?? 'error'}): ${err.message}`,
        ),
      );
    }
  };

  const draw = async () => {
    const d = await api('/api/models');
    body.replaceChildren();
    if (!d.models.length) {
      body.append(
        empty(
          'no models registered yet: `tributary backfill --out .data/train.csv && tributary train --training-set .data/train.csv` (or `npm start`)',
        ),
      );
      return;
    }
    body.append(
      el(
        'form',
        { class: 'inline', onsubmit: (e) => e.preventDefault() },
        el(
          'label',
          {},
          about.writable
            ? 'token (needed to promote or roll back)'
            : 'read-only: the console was started without a token',
          token,
        ),
        el(
          'button',
          { type: 'button', id: 'rollback', class: 'secondary', onclick: () => write('/api/models/rollback') },
          'Roll back',
        ),
      ),
      table(
        [
          { label: '', value: (m) => (m.current ? el('span', { class: 'badge' }, 'current') : '') },
          { label: 'version', value: (m) => m.version },
          { label: 'trained at', value: (m) => fmt.time(Date.parse(m.trainedAt)) },
          { label: 'rows', num: true, value: (m) => fmt.int(m.data.train?.rows) },
          { label: 'AUC', num: true, value: (m) => fmt.fixed(m.metrics.auc, 4) },
          { label: 'baseline AUC', num: true, value: (m) => fmt.fixed(m.metrics.baselineAuc, 4) },
          {
            label: 'lift 95% CI',
            num: true,
            value: (m) =>
              m.metrics.aucLiftCi95
                ? `${fmt.fixed(m.metrics.aucLiftCi95[0], 4)} … ${fmt.fixed(m.metrics.aucLiftCi95[1], 4)}`
                : '–',
          },
          { label: 'log loss', num: true, value: (m) => fmt.fixed(m.metrics.logloss, 5) },
          { label: 'baseline log loss', num: true, value: (m) => fmt.fixed(m.metrics.baselineLogloss, 5) },
          { label: 'served by', value: (m) => m.servedBy.join(', ') || '–' },
          {
            label: 'params',
            value: (m) =>
              Object.entries(m.params)
                .map(([k, v]) => `${k}=${v}`)
                .join(' '),
          },
          {
            label: '',
            value: (m) =>
              m.current
                ? ''
                : el(
                    'button',
                    {
                      type: 'button',
                      class: 'secondary',
                      'data-promote': m.version,
                      onclick: () => write(`/api/models/${m.version}/promote`),
                    },
                    'Promote',
                  ),
          },
        ],
        d.models,
        (m) => (m.current ? 'current' : undefined),
      ),
    );
    const shown = d.models.find((m) => m.current) ?? d.models.at(-1);
    body.append(
      el('h2', {}, `Calibration of ${shown.version}: predicted against observed click rate, by bucket of predictions`),
    );
    body.append(calibration(shown));
    body.append(el('h2', {}, `Feature weights of ${shown.version}`));
    body.append(
      prose(
        'p',
        'Weights on the standardised features (transformed: counts as log1p, rates as logit; then centred and scaled by the training data), so their sizes compare.',
        'help',
      ),
    );
    try {
      const w = await api(`/api/models/${shown.version}/weights`);
      body.append(w.note ? empty(w.note) : weights(w));
    } catch (err) {
      body.append(errorBox(err));
    }
  };
  await draw();
}

function calibration(m) {
  const xs = [...new Set([...m.calibration, ...m.baselineCalibration].map((b) => b.predicted))].sort((a, b) => a - b);
  const at = (buckets) => xs.map((x) => buckets.find((b) => b.predicted === x)?.observed ?? null);
  const c = chart(
    'Observed CTR against mean predicted CTR (10 equal-count buckets of the evaluation rows)',
    [
      { label: 'model', points: { show: true, size: 6 }, spanGaps: true },
      { label: 'baseline', points: { show: true, size: 5 }, spanGaps: true, color: '#9aa6b6' },
      { label: 'perfect', dash: [4, 4], color: '#1f8a4c' },
    ],
    { x: 'predicted CTR', y: 'observed CTR', id: 'calibration', height: 280, legend: true },
  );
  const box = el('div', { class: 'charts' }, c.box);
  requestAnimationFrame(() => c.set([xs, at(m.calibration), at(m.baselineCalibration), xs]));
  return box;
}

function weights(w) {
  const rows = [...w.weights].sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
  const max = Math.max(...rows.map((r) => Math.abs(r.weight)), 1e-12);
  return table(
    [
      { label: 'feature', value: (r) => r.feature },
      { label: 'weight', num: true, value: (r) => fmt.fixed(r.weight, 4) },
      {
        label: '',
        value: (r) =>
          el('span', {
            class: `bar ${r.weight >= 0 ? 'pos' : 'neg'}`,
            style: `width:${Math.round((160 * Math.abs(r.weight)) / max)}px`,
          }),
      },
    ],
    rows,
  );
}
