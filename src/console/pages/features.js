// Features: the catalog from the definitions; for an entity key, each feature over time beside its online value.
import { api, chart, el, empty, errorBox, fmt, prose, table } from './ui.js';

export async function render(main) {
  const cat = await api('/api/features');
  const params = new URLSearchParams(location.search);
  main.append(
    el('h1', {}, 'Features'),
    prose(
      'p',
      `${cat.features.length} features over ${cat.entities.length} entities, definitions version \`${cat.version}\` (src/features/definitions.ts). Type an entity key to see its features over time.`,
      'lede',
    ),
  );

  const entity = el('select', { name: 'entity' }, ...cat.entities.map((e) => el('option', { value: e.name }, e.name)));
  entity.value = params.get('entity') ?? 'ad';
  const key = el('input', { name: 'key', size: 24, placeholder: 'ad-3', value: params.get('key') ?? '' });
  const keyHint = el('span', { class: 'help' });
  const hint = () => {
    const e = cat.entities.find((x) => x.name === entity.value);
    keyHint.textContent = `key: ${e.fields.join(' | ')}`;
  };
  entity.addEventListener('change', hint);
  hint();
  const result = el('div', { id: 'history' });
  const form = el(
    'form',
    { class: 'inline', id: 'lookup' },
    el('label', {}, 'entity', entity),
    el('label', {}, 'key', key),
    el('button', { type: 'submit' }, 'Show history'),
    keyHint,
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams({ entity: entity.value, key: key.value.trim() });
    history.replaceState(null, '', `/features?${q}`);
    show(result, q, cat);
  });
  main.append(el('h2', {}, 'Entity history'), form, result);
  if (params.get('key')) show(result, new URLSearchParams({ entity: entity.value, key: params.get('key') }), cat);

  const filter = el(
    'select',
    {},
    el('option', { value: '' }, 'all entities'),
    ...cat.entities.map((e) => el('option', { value: e.name }, e.name)),
  );
  const list = el('div');
  const draw = () =>
    list.replaceChildren(
      table(
        [
          { label: 'feature', value: (f) => f.name },
          { label: 'entity', value: (f) => f.entity },
          { label: 'aggregation', value: (f) => f.aggregation + (f.column ? `(${f.column})` : '') },
          { label: 'source', value: (f) => f.source },
          { label: 'window', num: true, value: (f) => f.window },
          { label: 'tile', num: true, value: (f) => f.tile },
          { label: 'default', num: true, value: (f) => fmt.value(f.default) },
          { label: 'description', value: (f) => f.formula ?? f.description },
        ],
        cat.features.filter((f) => !filter.value || f.entity === filter.value),
      ),
    );
  filter.addEventListener('change', draw);
  draw();
  main.append(el('h2', {}, 'Catalog'), el('form', { class: 'inline' }, el('label', {}, 'show', filter)), list);
}

async function show(box, query, cat) {
  box.replaceChildren(el('p', { class: 'muted' }, 'Reading the offline history…'));
  let h;
  try {
    h = await api(`/api/features/history?${query}`);
  } catch (err) {
    box.replaceChildren(errorBox(err));
    return;
  }
  box.replaceChildren(
    prose(
      'p',
      `${fmt.int(h.events)} applied events of \`${h.entity}:${h.key}\` in the offline store${h.first ? `, ${fmt.time(h.first)} to ${fmt.time(h.last)}` : ''}. Each point is the value a read at that time gives over everything the stream applied (late events included), computed by the engine from ClickHouse's impressions and clicks; the online value is the online store read at ${fmt.time(h.at)} (the newest applied event time).`,
      'help',
    ),
  );
  if (h.events === 0) {
    box.append(
      empty(
        `no applied events for ${h.entity} "${h.key}" in the offline store: check the key (e.g. ad-3, u-7|cat-3) or run \`tributary stream\` with ClickHouse`,
      ),
    );
    return;
  }
  if (h.onlineProblem) box.append(errorBox(h.onlineProblem));
  const rows = h.features.map((name, i) => ({
    name,
    history: h.atValues?.[i] ?? null,
    online: h.online ? h.online[i] : null,
  }));
  const same = (r) =>
    r.online !== null &&
    r.history !== null &&
    Math.abs(r.online - r.history) <= 1e-9 * Math.max(1, Math.abs(r.history));
  box.append(
    table(
      [
        { label: 'feature', value: (r) => r.name },
        { label: `offline history at ${fmt.time(h.at)}`, num: true, value: (r) => fmt.value(r.history) },
        { label: 'online store, same moment', num: true, value: (r) => fmt.value(r.online) },
        {
          label: '',
          value: (r) =>
            r.online === null
              ? ''
              : el('span', { class: `badge ${same(r) ? 'good' : 'bad'}` }, same(r) ? 'equal' : 'differs'),
        },
      ],
      rows,
    ),
  );
  const grid = el('div', { class: 'charts small' });
  box.append(el('h2', {}, 'Over time'), grid);
  const xs = h.times.map((t) => t / 1000);
  h.features.forEach((name, i) => {
    const c = chart(name.replace(`${h.entity}__`, ''), [{ label: name }], {
      y: unitOf(cat, name),
      id: name,
      height: 160,
    });
    grid.append(c.box);
    c.set([xs, h.values[i]]);
  });
}

/** The y axis unit of a feature, from its aggregation in the catalog. */
function unitOf(cat, name) {
  const f = cat.features.find((x) => x.name === name);
  const units = {
    count: 'events',
    ratio: 'rate (smoothed)',
    sum: `sum of ${f?.column}`,
    distinct: `distinct ${f?.column}`,
    last_seen: 'seconds',
  };
  return units[f?.aggregation] ?? '';
}
