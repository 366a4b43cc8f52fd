// Parity: the last `tributary parity` run by feature, and the live check's intervals and mismatches.
import { api, chart, el, empty, fmt, prose, table } from './ui.js';

export async function render(main) {
  main.append(
    el('h1', {}, 'Parity'),
    prose(
      'p',
      'Training/serving skew, measured. `tributary parity` compares, for every impression the stream applied, the vector served from the online store, the backfill’s replay and independent ClickHouse SQL (counts exactly, the rest to 1e-9). The live check recomputes sampled served vectors from the log as the stream runs.',
      'lede',
    ),
  );
  const d = await api('/api/parity');
  main.append(el('h2', {}, 'Last batch run'));
  if (!d.last) main.append(empty(d.runHint));
  else {
    const r = d.last;
    const ok = r.mismatches === 0 && r.missingServed + r.missingSql === 0;
    main.append(
      el(
        'p',
        { 'data-parity': 'last' },
        el('span', { class: `badge ${ok ? 'good' : 'bad'}` }, ok ? 'in parity' : 'mismatches'),
        ` ${fmt.time(r.runAt)}: ${fmt.int(r.impressions)} impressions, ${fmt.int(r.mismatches)} mismatches, ${fmt.int(r.missingServed)} without a served vector, ${fmt.int(r.missingSql)} missing in SQL`,
      ),
      table(
        [
          { label: 'feature', value: (f) => f.feature },
          { label: 'served ≠ backfill', num: true, value: (f) => fmt.int(f.served) },
          { label: 'SQL ≠ backfill', num: true, value: (f) => fmt.int(f.sql) },
        ],
        r.byFeature,
      ),
    );
    if (r.examples && (!Array.isArray(r.examples) || r.examples.length))
      main.append(
        el('h2', {}, 'Examples'),
        el('pre', { class: 'help' }, JSON.stringify(r.examples, null, 2).slice(0, 4000)),
      );
  }

  main.append(el('h2', {}, 'Live check'));
  if (!d.live) {
    main.append(empty(d.liveHint));
    return;
  }
  const l = d.live;
  main.append(
    el(
      'p',
      {},
      `${fmt.int(l.checked)} served vectors checked in the intervals shown, ${fmt.int(l.mismatches)} feature mismatches.`,
    ),
  );
  const xs = l.intervals.map((i) => i.at / 1000);
  const checked = chart('Vectors checked per interval', [{ label: 'checked' }], { y: 'vectors', id: 'live-checked' });
  const mism = chart('Mismatches per interval', [{ label: 'mismatches', color: '#c2362b' }], {
    y: 'feature values',
    id: 'live-mismatches',
  });
  main.append(el('div', { class: 'charts' }, checked.box, mism.box));
  checked.set([xs, l.intervals.map((i) => i.checked)]);
  mism.set([xs, l.intervals.map((i) => i.mismatches)]);
  const bad = l.byFeature.filter((f) => f.mismatches > 0);
  main.append(
    el('h2', {}, 'Mismatches by feature'),
    bad.length
      ? table(
          [
            { label: 'feature', value: (f) => f.feature },
            { label: 'mismatches', num: true, value: (f) => fmt.int(f.mismatches) },
          ],
          bad,
        )
      : empty('none: every checked value equals its recomputation'),
  );
  if (l.recent.length)
    main.append(
      el('h2', {}, 'Recent mismatches'),
      table(
        [
          { label: 'at', value: (m) => fmt.time(m.at) },
          { label: 'event', value: (m) => m.eventId },
          { label: 'log position', value: (m) => `${m.topic}/${m.partition}@${m.offset}` },
          { label: 'feature', value: (m) => m.feature },
          { label: 'served', num: true, value: (m) => fmt.value(m.served) },
          { label: 'recomputed', num: true, value: (m) => fmt.value(m.recomputed) },
        ],
        l.recent,
      ),
    );
}
