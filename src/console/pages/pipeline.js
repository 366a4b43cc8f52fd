// Pipeline: per partition, lag, events/s, freshness, the last checkpoint; dead letters by reason. Polled live.
import { api, cards, chart, el, empty, errorBox, fmt, poll, prose, table } from './ui.js';

export async function render(main, about) {
  main.append(
    el('h1', {}, 'Pipeline'),
    prose(
      'p',
      'Where the stream stands in the log, per source partition, sampled every few seconds by the console. `lag` = messages in the log not yet processed (log end − next offset of the last checkpoint); `events/s` = offsets the stream advanced per second between two samples; `freshness` = now − the newest event time the stream applied; `read age` = how old the newest data a read made now sees is: a window read at t covers the complete tiles before t’s own tile, so it is now − min(newest applied event time, start of now’s smallest tile).',
      'lede',
    ),
  );
  const status = el('div');
  const summary = el('div');
  const parts = el('div');
  const lagChart = chart('Lag by partition', [], { y: 'messages', id: 'lag' });
  const rateChart = chart('Events processed per second', [], { y: 'events / s', id: 'rate' });
  const charts = el('div', { class: 'charts' }, lagChart.box, rateChart.box);
  const dead = el('div');
  main.append(
    status,
    summary,
    el('h2', {}, 'Partitions'),
    parts,
    el('h2', {}, 'Over time'),
    charts,
    el('h2', {}, 'Dead letters'),
    dead,
  );

  let seriesKeys = '';
  let lag = lagChart;
  let rate = rateChart;
  poll(
    about.intervalMs,
    async () => {
      const d = await api('/api/pipeline');
      status.replaceChildren();
      if (d.problem) status.append(errorBox(d.problem));
      const ps = d.partitions;
      const total = (f) => ps.reduce((a, p) => a + (f(p) ?? 0), 0);
      const newest = Math.max(0, ...ps.map((p) => p.newestEventTime ?? 0));
      summary.replaceChildren(
        cards([
          ['total lag', fmt.int(total((p) => p.lag)), 'lag'],
          [
            'events / s',
            fmt.fixed(
              total((p) => p.eventsPerSecond),
              1,
            ),
            'rate',
          ],
          ['newest event applied', newest ? fmt.time(newest) : '–', 'newest'],
          [
            'freshness (best partition)',
            fmt.age(Math.min(...ps.map((p) => p.freshnessSeconds ?? Number.POSITIVE_INFINITY))),
            'freshness',
          ],
          [
            'applied / late / duplicate / invalid',
            ['applied', 'late', 'duplicate', 'invalid'].map((v) => fmt.int(d.verdicts[v] ?? 0)).join(' / '),
            'verdicts',
          ],
        ]),
      );
      parts.replaceChildren(
        ps.length
          ? table(
              [
                { label: 'topic', value: (p) => p.topic },
                { label: 'partition', num: true, value: (p) => p.partition },
                { label: 'log end', num: true, value: (p) => fmt.int(p.end) },
                { label: 'checkpoint offset', num: true, value: (p) => fmt.int(p.next) },
                { label: 'lag', num: true, value: (p) => fmt.int(p.lag) },
                { label: 'events / s', num: true, value: (p) => fmt.fixed(p.eventsPerSecond, 1) },
                { label: 'freshness', num: true, value: (p) => fmt.age(p.freshnessSeconds) },
                { label: 'read age', num: true, value: (p) => fmt.age(p.readAgeSeconds) },
                { label: 'newest event time', value: (p) => fmt.time(p.newestEventTime) },
                {
                  label: 'last checkpoint',
                  value: (p) =>
                    p.committedAt
                      ? `${fmt.time(p.committedAt)} (${fmt.age((d.sampledAt - p.committedAt) / 1000)} ago)`
                      : 'none yet',
                },
              ],
              ps,
            )
          : empty(
              d.problem ? 'no partition progress to show' : 'no partitions yet: the console samples every few seconds',
            ),
      );
      parts.firstChild.setAttribute?.('data-table', 'partitions');

      // The charts are rebuilt when the set of partitions changes (a series per partition).
      const ids = Object.keys(d.series.partitions).sort();
      if (ids.join() !== seriesKeys) {
        seriesKeys = ids.join();
        const s = ids.map((id) => ({ label: id }));
        lag = chart('Lag by partition', s, { y: 'messages', id: 'lag' });
        rate = chart('Events processed per second', s, { y: 'events / s', id: 'rate' });
        charts.replaceChildren(lag.box, rate.box);
      }
      const xs = d.series.at.map((t) => t / 1000);
      lag.set([xs, ...ids.map((id) => d.series.partitions[id].lag)]);
      rate.set([xs, ...ids.map((id) => d.series.partitions[id].rate)]);

      const dl = d.deadLetters;
      dead.replaceChildren(prose('p', `From ${dl.from}.`, 'help'));
      if (dl.problem) dead.append(errorBox(dl.problem));
      if (!dl.reasons.length)
        dead.append(empty('no dead letters: every event read was applied, a duplicate, or is still to come'));
      else {
        dead.append(
          table(
            [
              { label: 'reason', value: (r) => r.reasonClass },
              { label: 'letters', num: true, value: (r) => fmt.int(r.count) },
              { label: 'replayed', num: true, value: (r) => fmt.int(r.replayed) },
            ],
            dl.reasons,
          ),
        );
        const examples = dl.reasons.flatMap((r) => r.examples);
        if (examples.length)
          dead.append(
            el('h2', {}, 'Examples'),
            table(
              [
                { label: 'dead-lettered', value: (x) => fmt.time(x.time) },
                { label: 'letter', value: (x) => `${x.partition}:${x.offset}` },
                { label: 'source', value: (x) => `${x.source.topic}/${x.source.partition}@${x.source.offset}` },
                { label: 'bytes', num: true, value: (x) => fmt.int(x.bytes) },
                { label: 'replayed', value: (x) => (x.replayed ? 'yes' : 'no') },
                { label: 'reason', value: (x) => x.reason },
              ],
              examples,
            ),
          );
      }
    },
    (err) => status.replaceChildren(errorBox(err)),
  );
}
