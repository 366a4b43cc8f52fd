// The console's entry: the nav bar, the header's summary, then the page module named by the path.
import { api, el, errorBox, showProblems } from './ui.js';

const PAGES = [
  ['pipeline', 'Pipeline'],
  ['features', 'Features'],
  ['parity', 'Parity'],
  ['models', 'Models'],
  ['serving', 'Serving'],
];
const page = location.pathname.replace(/^\/+|\/+$/g, '') || 'pipeline';
document
  .getElementById('nav')
  .replaceChildren(
    ...PAGES.map(([id, label]) => el('a', { href: `/${id}`, class: id === page ? 'active' : undefined }, label)),
  );
const main = document.getElementById('main');

try {
  const about = await api('/api/overview');
  document.getElementById('about').textContent =
    `${about.mode} · namespace ${about.namespace || '(none)'} · definitions ${about.definitionsVersion} · ${about.writable ? 'writes need the token' : 'read-only'}`;
  showProblems(about.problems.map((p) => `metrics from ${p.source} unavailable: ${p.reason}`));
  const known = PAGES.some(([id]) => id === page);
  if (!known) throw new Error(`no page "${page}"`);
  document.title = `${PAGES.find(([id]) => id === page)[1]} · Tributary`;
  const mod = await import(`/static/${page}.js`);
  main.replaceChildren();
  await mod.render(main, about);
} catch (err) {
  main.replaceChildren(errorBox(err));
}
