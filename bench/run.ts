// `npm run bench [-- NAME...] [--events N ...] [--cpu-prof DIR]`: runs benchmarks against real local servers
// (`npm run services start`; KAFKA_PORT, VALKEY_PORT, REGISTRY_PORT move them), prints one table in which every
// metric sits beside a baseline measured in the same run, and writes the results to bench/results/<time>.json.
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { backfillBench } from './backfill.ts';
import { backfillIoBench } from './backfill-io.ts';
import { type Bench, formatTable, Meter, type Row, SERVERS, writeResults } from './lib.ts';
import { rankBench } from './rank.ts';
import { scaleBench } from './scale.ts';
import { streamBench } from './stream.ts';

/** Every benchmark, in the order they run. Add new ones here. */
const BENCHES: Bench[] = [streamBench, rankBench, backfillBench, backfillIoBench as Bench, scaleBench as Bench];

const optionNames = new Set(BENCHES.flatMap((b) => Object.keys(b.options)));
const { values: flags, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    help: { type: 'boolean' },
    'cpu-prof': { type: 'string' },
    ...Object.fromEntries([...optionNames].map((n) => [n, { type: 'string' as const }])),
  },
});
const unknown = positionals.filter((n) => !BENCHES.some((b) => b.name === n));
if (flags.help || unknown.length > 0) {
  if (unknown.length > 0) console.error(`unknown benchmark: ${unknown.join(', ')}`);
  console.error('usage: npm run bench -- [NAME...] [--cpu-prof DIR] [--OPTION N...]\n');
  for (const b of BENCHES) {
    const opts = Object.entries(b.options).map(([n, d]) => `--${n} (${d})`);
    console.error(`  ${b.name.padEnd(10)} ${b.description}\n  ${''.padEnd(10)} ${opts.join(', ')}`);
  }
  process.exit(unknown.length > 0 ? 2 : 0);
}
const selected = positionals.length > 0 ? BENCHES.filter((b) => positionals.includes(b.name)) : BENCHES;
const profileDir = typeof flags['cpu-prof'] === 'string' ? flags['cpu-prof'] : undefined;

function optionsOf(bench: Bench): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, fallback] of Object.entries(bench.options)) {
    const raw =
      (flags as Record<string, unknown>)[name] ?? process.env[`BENCH_${name.toUpperCase().replace(/-/g, '_')}`];
    const n = raw === undefined ? fallback : Number(raw);
    // Zero turns an option off where that means something (rank's --live-rate).
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number ≥ 0, got ${raw}`);
    out[name] = n;
  }
  return out;
}

const log = (message: string) => console.error(`[bench +${(performance.now() / 1000).toFixed(1)}s] ${message}`);
const meter = (label: string) => Meter.start(label, profileDir);

function gitCommit(): string | undefined {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', 'src'], { encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head}+dirty` : head;
  } catch {
    return undefined;
  }
}

const rows: Row[] = [];
const details: Record<string, unknown> = {};
for (const bench of selected) {
  const options = optionsOf(bench);
  log(`${bench.name}: ${bench.description} ${JSON.stringify(options)}`);
  const out = await bench.run({ options, log, meter, profileDir });
  rows.push(...out.rows);
  details[bench.name] = { options, ...out.details };
}

console.log(formatTable(rows));
console.log('\nratio = value / baseline (same run). Throughput: higher is better; latency, RSS: lower is better.');
const path = writeResults(join(import.meta.dirname, 'results'), {
  time: new Date().toISOString(),
  commit: gitCommit(),
  node: process.version,
  cpus: `${cpus().length} × ${cpus()[0]?.model ?? '?'}`,
  servers: SERVERS,
  maxRssMB: process.resourceUsage().maxRSS / 1024,
  rows: rows.map((r) => ({ ...r, ratio: r.baseline ? r.value / r.baseline : undefined })),
  details,
});
console.error(`[bench] results written to ${path}`);
