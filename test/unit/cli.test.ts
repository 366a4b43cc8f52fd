// The command line as a user meets it: the demo runs with no servers; mistakes get one line and a usable exit code.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const cli = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    encoding: 'utf8',
    env: { ...process.env, TRIBUTARY_KAFKA: '', TRIBUTARY_VALKEY: '', TRIBUTARY_SCHEMA_REGISTRY: '' },
  });

describe('tributary CLI', () => {
  it('runs the demo on embedded defaults and reports a training set', { timeout: 60_000 }, () => {
    const r = cli('demo');
    expect(r.status, r.stderr).toBe(0);
    const rows = Number(/training set: (\d+) rows/.exec(r.stdout)?.[1]);
    expect(rows).toBeGreaterThan(10_000);
    expect(r.stdout).toMatch(/replayed through 58 features/);
  });

  it('answers a configuration mistake with one line and exit 2, an unknown flag likewise', { timeout: 30_000 }, () => {
    const noKafka = cli('stream');
    expect(noKafka.status).toBe(2);
    expect(noKafka.stderr.trim()).toBe('tributary: stream needs Kafka: pass --kafka host:port');
    const badUrl = cli('--schema-registry', 'localhost:8081', 'config');
    expect(badUrl.status).toBe(2);
    expect(badUrl.stderr).toMatch(/schemaRegistry must be an http\(s\) URL/);
    expect(cli('generate', '--no-such-flag').status).toBe(2);
  });
});
