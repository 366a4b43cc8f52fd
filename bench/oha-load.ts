// The paced phase driven by oha (Rust, open loop; scripts/tools/oha.sh installs it from crates.io): a generator
// outside Node, whose scheduling and GC are not part of what it measures. Its latency correction counts each
// request from when it was due (a late send would otherwise flatter a slow server); bodies are taken from a file,
// one per line. Its CPU is the child's, read from the shell's `times` once it has exited.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PacedLoad, PacedResult } from './paced-load.ts';

/** oha's path: $TRIBUTARY_OHA, else the one scripts/tools/oha.sh installed; undefined when neither. */
export function findOha(): string | undefined {
  if (process.env.TRIBUTARY_OHA) return process.env.TRIBUTARY_OHA;
  const found = spawnSync('bash', [join(import.meta.dirname, '../scripts/tools/oha.sh'), 'path'], { encoding: 'utf8' });
  return found.status === 0 ? found.stdout.trim() || undefined : undefined;
}

/** Runs the paced load through oha; also returns the CPU seconds oha spent. */
export async function ohaLoad(bin: string, load: PacedLoad): Promise<PacedResult & { cpuSeconds: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-oha-'));
  try {
    const bodies = join(dir, 'bodies.ndjson');
    writeFileSync(bodies, load.bodies.map((b) => b.replace(/\n/g, ' ')).join('\n'));
    // biome-ignore format: one argument per flag reads best
    const args = [bin, '-q', String(load.rate), '-z', `${load.seconds}s`, '-c', String(load.connections),
      '--latency-correction', '--no-tui', '--output-format', 'csv', '-m', 'POST',
      '-H', 'content-type: application/json', '-Z', bodies, '-t', '10s', load.url];
    const shell = spawn('bash', ['-c', '"$@"; status=$?; times >&2; exit $status', 'oha', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let err = '';
    shell.stdout.on('data', (d: Buffer) => out.push(d));
    shell.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => shell.once('exit', resolve));
    if (code !== 0) throw new Error(`oha exited with ${code}: ${err.trim()}`);
    // `times`: the shell's user and system time, then its children's ("0m1.234s 0m0.456s").
    const cpuSeconds = [...(err.trim().split('\n').at(-1) ?? '').matchAll(/(\d+)m([\d.]+)s/g)].reduce(
      (s, m) => s + Number(m[1]) * 60 + Number(m[2]),
      0,
    );

    // CSV: request-start (s from the start), DNS, DNS+dialup, Response-delay, request-duration (s), bytes, status.
    const rows = Buffer.concat(out).toString().trim().split('\n').slice(1);
    const starts: number[] = [];
    const latencies: number[] = [];
    let non2xx = 0;
    let errors = 0;
    let end = 0;
    for (const row of rows) {
      const f = row.split(',');
      const start = Number(f[0]) * 1000;
      const ms = Number(f[4]) * 1000;
      const status = Number(f[6]);
      starts.push(start);
      if (Number.isFinite(ms)) end = Math.max(end, start + ms);
      if (!Number.isFinite(ms) || !status) errors++;
      else if (status < 200 || status > 299) non2xx++;
      else latencies.push(ms);
    }
    // Request i (in order of sending) was due at i / rate: how late oha's own loop sent it.
    starts.sort((a, b) => a - b);
    const sendLags = starts.map((s, i) => Math.max(0, s - (i * 1000) / load.rate));
    return {
      latencies: latencies.sort((a, b) => a - b),
      sendLags: sendLags.sort((a, b) => a - b),
      elapsedSeconds: end / 1000,
      non2xx,
      errors,
      cpuSeconds,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
