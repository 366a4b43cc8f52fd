// Helpers every console page uses: the API, formatting, DOM building and uPlot charts.
import uPlot from '/vendor/uplot/uPlot.esm.js';

/** GET or POST the console's JSON API; a non-2xx answer throws its reason. */
export async function api(path, init = {}) {
  const res = await fetch(path, init);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error(body.reason ?? `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

/** An element with attributes and children (strings become text). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

/** Text with `code` spans for what is between backticks. */
export function prose(tag, text, cls) {
  const e = el(tag, { class: cls });
  text.split('`').forEach((part, i) => {
    e.append(i % 2 ? el('code', {}, part) : part);
  });
  return e;
}

export const empty = (text) => prose('div', text, 'empty');
export const errorBox = (err) => el('div', { class: 'error', role: 'alert' }, String(err?.message ?? err));

const grouped = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
export const fmt = {
  int: (x) => (x === null || x === undefined || Number.isNaN(x) ? '–' : grouped.format(x)),
  fixed: (x, d = 2) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d)),
  pct: (x, d = 1) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : `${(100 * x).toFixed(d)}%`),
  /** A number of seconds as the largest sensible unit. */
  age: (s) => {
    if (s === null || s === undefined || !Number.isFinite(s)) return '–';
    if (s < 120) return `${s.toFixed(1)} s`;
    if (s < 7200) return `${(s / 60).toFixed(1)} min`;
    if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
    return `${(s / 86400).toFixed(1)} d`;
  },
  time: (ms) =>
    ms === null || ms === undefined ? '–' : new Date(ms).toISOString().replace('T', ' ').replace('.000Z', 'Z'),
  value: (x) => {
    if (x === null || x === undefined || Number.isNaN(x)) return '–';
    if (Number.isInteger(x)) return grouped.format(x);
    return Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(6);
  },
};

export function table(columns, rows, rowClass) {
  const head = el('tr', {}, ...columns.map((c) => el('th', { class: c.num ? 'num' : undefined }, c.label)));
  const body = rows.map((r) =>
    el(
      'tr',
      { class: rowClass?.(r) },
      ...columns.map((c) => {
        const v = c.value(r);
        return el('td', { class: c.num ? 'num' : undefined }, v instanceof Node ? v : String(v));
      }),
    ),
  );
  return el('div', { class: 'scroll' }, el('table', {}, el('thead', {}, head), el('tbody', {}, ...body)));
}

export function cards(items) {
  return el(
    'div',
    { class: 'cards' },
    ...items.map(([label, value, id]) =>
      el(
        'div',
        { class: 'card', 'data-card': id },
        el('div', { class: 'label' }, label),
        el('div', { class: 'value' }, value),
      ),
    ),
  );
}

const PALETTE = ['#2f6fdf', '#e0712c', '#1f8a4c', '#c2362b', '#7b4fc9', '#0f8b8d', '#b8860b', '#d6457f', '#5a6b7d'];
export const color = (i) => PALETTE[i % PALETTE.length];

/**
 * A uPlot chart in a titled box. `series`: [{label, color?}] after the x series; `opts.x`: 'time' (epoch seconds)
 * or a label; `opts.y`: the y axis label with its unit. The box carries data-points (x values held) for tests.
 */
export function chart(title, series, opts = {}) {
  const box = el('div', { class: 'chart', 'data-chart': opts.id ?? title }, el('h3', {}, title));
  // The box's laid-out width; before layout (0) the default.
  const width = () => {
    const w = box.getBoundingClientRect().width - 16;
    return w > 100 ? w : (opts.width ?? 420);
  };
  const time = opts.x === undefined || opts.x === 'time';
  let plot;
  const config = () => ({
    width: width(),
    height: opts.height ?? 200,
    scales: { x: { time, ...(opts.xScale ?? {}) }, y: opts.yScale ?? {} },
    axes: [
      { label: time ? undefined : opts.x, size: time ? 40 : 50, values: opts.xValues },
      { label: opts.y, size: 60, values: opts.yValues },
    ],
    legend: { show: series.length > 1 || opts.legend === true },
    series: [
      { label: time ? 'time' : opts.x },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.color ?? color(i),
        width: 1.5,
        fill: s.fill,
        paths: s.paths,
        points: s.points ?? { show: false },
        dash: s.dash,
        spanGaps: s.spanGaps ?? false,
      })),
    ],
  });
  return {
    box,
    /** data: [xs, ...ys] as uPlot takes it. */
    set(data) {
      box.setAttribute('data-points', String(data[0]?.length ?? 0));
      if (!plot) {
        if (!box.isConnected) return;
        plot = new uPlot(config(), data, box);
        box.uplot = plot;
      } else plot.setData(data);
    },
  };
}

export const bars = () => uPlot.paths.bars({ size: [0.8, 40] });

/** Shows a page-level problem list (sources that did not answer) under the header. */
export function showProblems(problems) {
  const box = document.getElementById('problems');
  box.replaceChildren(...problems.map((p) => el('div', {}, p)));
  box.hidden = problems.length === 0;
}

/** Calls `fn` now and every `ms` while the page is open; errors go to `onError`, polling goes on. */
export function poll(ms, fn, onError) {
  let stopped = false;
  const run = async () => {
    try {
      await fn();
    } catch (err) {
      onError(err);
    }
    if (!stopped) setTimeout(run, ms);
  };
  run();
  return () => {
    stopped = true;
  };
}
