// Resume: `tributary backfill` killed with SIGKILL midway, then run again with the same command, finishes from its
// last checkpoint and leaves exactly the file an uninterrupted run writes (same bytes: no row lost or repeated).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runBackfill } from '../../src/backfill/run.ts';
import { fromEventFile } from '../../src/backfill/sources.ts';
import { writeEventFile } from '../../src/events/event-file.ts';
import { generate } from '../../src/events/generator.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';

const HOUR = 3600_000;

describe('backfill resume', () => {
  it('after SIGKILL, a rerun resumes from the checkpoint and writes the clean run byte for byte', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'backfill-resume-'));
    const events = join(dir, 'events.ndjson');
    await writeEventFile(events, generate({ seed: 3, days: 2, impressionsPerDay: 12_000, users: 2000, ads: 200 }));
    const source = `file:${events}`;

    const clean = join(dir, 'clean.csv');
    await runBackfill({
      features: new FeatureSet(DEFAULT_GROUPS),
      open: () => fromEventFile(events),
      sourceName: source,
      out: clean,
      attributionMs: HOUR,
      allowedLatenessMs: HOUR,
    });

    const out = join(dir, 'train.csv');
    const args = ['--import', 'tsx', 'src/cli/main.ts', 'backfill', '--source', source, '--out', out];
    args.push('--checkpoint-every', '2000');
    const child = spawn(process.execPath, args, { stdio: 'ignore' });
    const checkpoint = `${out}.checkpoint.json`;
    // Kill once a few checkpoints are down, i.e. well inside the replay.
    await new Promise<void>((resolve, reject) => {
      const poll = setInterval(() => {
        if (existsSync(checkpoint) && JSON.parse(readFileSync(checkpoint, 'utf8')).events >= 6000) {
          clearInterval(poll);
          child.kill('SIGKILL');
          resolve();
        }
      }, 5);
      child.on('exit', () => {
        clearInterval(poll);
        reject(new Error('backfill finished before it could be killed'));
      });
    });
    await new Promise((resolve) => child.on('exit', resolve));
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.partial`)).toBe(true);

    const rerun = spawnSync(process.execPath, args, { encoding: 'utf8' });
    expect(rerun.status, rerun.stderr).toBe(0);
    expect(rerun.stderr).toMatch(/resuming from the last checkpoint/);
    expect(readFileSync(out, 'utf8')).toBe(readFileSync(clean, 'utf8'));
    expect(readFileSync(`${out}.meta.json`, 'utf8')).toBe(readFileSync(`${clean}.meta.json`, 'utf8'));
    expect(existsSync(checkpoint)).toBe(false);
  }, 60_000);
});
