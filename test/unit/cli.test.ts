// The command line as a user meets it: the demo runs with no servers; mistakes get one line and a usable exit code.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { embeddedEnv } from '../support/services.ts';

const dir = mkdtempSync(join(tmpdir(), 'tributary-cli-'));
const env = embeddedEnv({
  TRIBUTARY_LOG_DIR: join(dir, 'log'),
  TRIBUTARY_CLICKHOUSE_DIR: join(dir, 'clickhouse'),
});
const args = (a: string[]) => ['--import', 'tsx', 'src/cli/main.ts', ...a];
const cli = (...a: string[]) => spawnSync(process.execPath, args(a), { encoding: 'utf8', env });
/** The same, several at once (each is mostly tsx start-up). */
const clis = (runs: string[][]) =>
  Promise.all(
    runs.map(
      (a) =>
        new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
          const p = spawn(process.execPath, args(a), { env });
          let stdout = '';
          let stderr = '';
          p.stdout.on('data', (d) => {
            stdout += d;
          });
          p.stderr.on('data', (d) => {
            stderr += d;
          });
          p.on('close', (status) => resolve({ status, stdout, stderr }));
        }),
    ),
  );
/** No server listens here. */
const NOWHERE = '127.0.0.1:59999';
const demoDir = mkdtempSync(join(dir, 'demo-'));

describe('tributary CLI', () => {
  it('runs the whole loop on embedded defaults: parity 0, AUC above the baseline, then /v1/rank answers', {
    timeout: 240_000,
  }, async () => {
    const demo = spawn(
      process.execPath,
      args([
        'demo',
        '--out',
        demoDir,
        '--days',
        '2',
        '--impressions-per-day',
        '12000',
        '--port',
        '0',
        '--console-port',
        '0',
      ]),
      { env },
    );
    let stdout = '';
    let stderr = '';
    demo.stderr.on('data', (d) => {
      stderr += d;
    });
    const exited = new Promise<number | null>((done) => demo.on('close', done));
    // The report, then the address and a sample request body once it serves.
    const serving = await new Promise<RegExpExecArray>((done, fail) => {
      demo.stdout.on('data', (d) => {
        stdout += d;
        const m = /serving \/v1\/rank at (\S+) .*\n.*-d '(.*)'\n/.exec(stdout);
        if (m) done(m);
      });
      demo.on('close', (code) => fail(new Error(`demo exited (${code}) before serving: ${stderr.slice(-2000)}`)));
    });
    expect(stdout).toMatch(/^parity mismatches\s+0$/m);
    // The report narrates the steps; the parts' JSON info lines would land inside it on a terminal.
    expect(stderr).not.toContain('"level":30');
    const auc = /^AUC\s+([\d.]+)\s+baseline \(ad CTR alone\) ([\d.]+)$/m.exec(stdout);
    expect(Number(auc?.[1])).toBeGreaterThan(Number(auc?.[2]));
    expect(Number(/^training rows\s+([\d,]+)/m.exec(stdout)?.[1]?.replaceAll(',', ''))).toBeGreaterThan(10_000);
    const res = await fetch(`${serving[1]}/v1/rank`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: serving[2],
    });
    expect(res.status).toBe(200);
    const ranking = (await res.json()) as { ranked: { rank: number; pctr: number }[]; features_defaulted: boolean };
    expect(ranking.ranked.map((c) => c.rank)).toEqual([1, 2, 3]);
    expect(ranking.features_defaulted).toBe(false);
    demo.kill('SIGINT');
    expect(await exited).toBe(0);
  });

  it('streams a generated file log in another process, with no servers', { timeout: 90_000 }, () => {
    const gen = cli('generate', '--days', '1', '--impressions-per-day', '3000');
    expect(gen.status, gen.stderr).toBe(0);
    const published = Number(/"events":(\d+),"to":"file log at /.exec(gen.stderr)?.[1]);
    expect(published).toBeGreaterThan(3000);
    const stream = cli('stream', '--until-caught-up');
    expect(stream.status, stream.stderr).toBe(0);
    // The schema ids of the in-memory registry agree across processes: every event decodes, none dead-lettered.
    // The last line, written after the stream closed, counts every message consumed, each once.
    const last = JSON.parse(stream.stderr.trim().split('\n').at(-1) as string);
    expect(last).toMatchObject({ msg: 'stopped', processed: published, invalid: 0 });
    expect(last.applied + last.late + last.duplicate).toBe(published);
    expect(stream.stderr).not.toMatch(/dead|"level":[45]0/);
    // Streamed without --record-served: parity fails, and says why.
    const parity = cli('parity');
    expect(parity.status, parity.stderr).toBe(1);
    expect(parity.stderr).toMatch(
      /^tributary: (\d+) of \1 impressions have no served vector: stream with --record-served .*$/m,
    );
  });

  it('stops as asked when the stop signal goes to bin/tributary.js (what npx and supervisors signal)', {
    timeout: 30_000,
  }, async () => {
    const logDir = mkdtempSync(join(tmpdir(), 'tributary-cli-signal-'));
    const stream = spawn(process.execPath, ['bin/tributary.js', 'stream', '--no-offline'], {
      env: { ...env, TRIBUTARY_LOG_DIR: logDir },
    });
    let stderr = '';
    await new Promise<void>((started, fail) => {
      stream.stderr.on('data', (d) => {
        stderr += d;
        if (stderr.includes('"msg":"streaming"')) started();
      });
      stream.on('close', (code) => fail(new Error(`stream exited (${code}) before streaming: ${stderr}`)));
    });
    const exited = once(stream, 'close');
    stream.kill('SIGTERM');
    const [code, signal] = await exited;
    expect({ code, signal }, stderr).toEqual({ code: 0, signal: null });
    expect(stderr).toContain('"msg":"stopping"');
  });

  it('trains on the demo training set, registers, lists, promotes and rolls back', { timeout: 120_000 }, () => {
    const models = join(demoDir, 'models-cli'); // not the demo's own registry
    const trainHere = (...args: string[]) =>
      cli('train', '--training-set', join(demoDir, 'training.csv'), '--models', models, ...args);
    const first = trainHere();
    expect(first.status, first.stderr).toBe(0);
    const auc = /^AUC\s+([\d.]+)\s+([\d.]+)/m.exec(first.stdout);
    expect(Number(auc?.[1])).toBeGreaterThan(Number(auc?.[2])); // model above the ad-CTR baseline
    expect(first.stdout).toMatch(/calibration on the evaluation rows/);
    const v1 = /model ([0-9a-f]{12}) registered .*; now current/.exec(first.stdout)?.[1] as string;
    const second = trainHere('--l2', '1');
    const v2 = /model ([0-9a-f]{12}) registered .*; current stays/.exec(second.stdout)?.[1] as string;
    expect(v2).toMatch(/^[0-9a-f]{12}$/);
    expect(cli('models', 'list', '--models', models).stdout).toMatch(new RegExp(`\\* ${v1}.*\\n  ${v2}`));
    expect(cli('models', 'promote', v2, '--models', models).stdout.trim()).toBe(`current: ${v2} (was ${v1})`);
    expect(readFileSync(join(models, 'CURRENT'), 'utf8')).toBe(`${v2}\n`);
    expect(cli('models', 'rollback', '--models', models).stdout.trim()).toBe(`current: ${v1} (was ${v2})`);
    const shown = JSON.parse(cli('models', 'show', v1, '--models', models).stdout);
    expect(shown.contract.features).toHaveLength(58);
    expect(shown.run.params.l2).toBe(0.01);

    const missing = cli('train', '--training-set', join(demoDir, 'nope.csv'), '--models', models);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/^tributary: cannot read .*nope\.csv\.meta\.json/);
  });

  it('answers each user mistake with one line and an exit code scripts can use', { timeout: 60_000 }, async () => {
    writeFileSync(join(dir, 'bad.json'), '{ "kafka": ');
    const [noRegistry, badUrl, unknownFlag, noFile, badFile, registry, valkey, clickhouse] = await clis([
      ['stream', '--kafka', NOWHERE],
      ['--schema-registry', 'localhost:8081', 'config'],
      ['generate', '--no-such-flag'],
      ['--config', join(dir, 'missing.json'), 'config'],
      ['--config', join(dir, 'bad.json'), 'config'],
      ['--schema-registry', `http://${NOWHERE}/apis/ccompat/v7`, 'generate', '--days', '1'],
      ['--valkey', `redis://${NOWHERE}`, 'stream', '--no-offline'],
      ['--clickhouse', `http://${NOWHERE}`, 'stream'],
    ]);
    const expectLine = (r: typeof noRegistry, status: number, line: RegExp) => {
      expect(r?.status, r?.stderr).toBe(status);
      expect(
        r?.stderr
          .trim()
          .split('\n')
          .filter((l) => !l.startsWith('npm warn')),
      ).toEqual([expect.stringMatching(line)]);
    };
    expectLine(noRegistry, 2, /^tributary: stream from Kafka needs a Schema Registry: pass --schema-registry URL$/);
    expectLine(badUrl, 2, /^tributary: schemaRegistry must be an http\(s\) URL, got "localhost:8081"$/);
    expectLine(unknownFlag, 2, /^tributary: unknown option '--no-such-flag' \(see `tributary --help`\)$/);
    expectLine(noFile, 2, /^tributary: cannot read config file .*missing\.json: ENOENT/);
    expectLine(badFile, 2, /^tributary: cannot read config file .*bad\.json: .*JSON/);
    expectLine(
      registry,
      3,
      /^tributary: Schema Registry not reachable at http:\/\/127\.0\.0\.1:59999\/apis\/ccompat\/v7: run `tributary services start registry` or pass --schema-registry \(.*ECONNREFUSED/,
    );
    expectLine(
      valkey,
      3,
      /^tributary: Valkey not reachable at redis:\/\/127\.0\.0\.1:59999: run `tributary services start valkey` or pass --valkey \(.*ECONNREFUSED/,
    );
    expectLine(
      clickhouse,
      3,
      /^tributary: ClickHouse not reachable at URL: http:\/\/127\.0\.0\.1:59999 .*pass --clickhouse/,
    );
  });

  it('answers first-hour mistakes with what to do, and exit 2 (usage) or 3 (a server is down)', {
    timeout: 60_000,
  }, async () => {
    writeFileSync(join(dir, 'typo.json'), '{ "kafak": "127.0.0.1:9092" }');
    const empty = mkdtempSync(join(dir, 'empty-'));
    const [noFile, typo, valkeyDown, lateness, days, share, backfill, parity] = await clis([
      ['produce', '--file', '../shared/data/no-such-sample.csv', '--mapping', 'talkingdata'],
      ['--config', join(dir, 'typo.json'), 'config'],
      ['--valkey', `redis://${NOWHERE}`, 'features', 'read', '--user', 'u-7', '--ad', 'ad-3'],
      ['stream', '--allowed-lateness', '5parsecs'],
      ['generate', '--days', '-1'],
      ['generate', '--late-share', '2'],
      ['--clickhouse-dir', join(empty, 'ch1'), 'backfill', '--source', 'clickhouse', '--out', join(empty, 't.csv')],
      ['--clickhouse-dir', join(empty, 'ch2'), 'parity'],
    ]);
    const expectLine = (r: typeof noFile, status: number, line: RegExp) => {
      expect(r?.status, r?.stderr).toBe(status);
      expect(r?.stderr.trim().split('\n')).toEqual([expect.stringMatching(line)]);
    };
    expectLine(
      noFile,
      2,
      /^tributary: --file \.\.\/shared\/data\/no-such-sample\.csv: no such file \(looked at \/.*no-such-sample\.csv\): the TalkingData sample is not part of the clone .*pass its path$/,
    );
    expectLine(typo, 2, /^tributary: config file .*typo\.json: unknown key "kafak" \(did you mean "kafka"\?\)$/);
    expectLine(
      valkeyDown,
      3,
      /^tributary: Valkey not reachable at redis:\/\/127\.0\.0\.1:59999: run `tributary services start valkey` or pass --valkey \(.*ECONNREFUSED/,
    );
    expectLine(
      lateness,
      2,
      /^tributary: --allowed-lateness "5parsecs" is not a duration \(use e\.g\. 30s, 5m, 1h, 7d\)$/,
    );
    expectLine(days, 2, /^tributary: --days must be a whole number of at least 1, got "-1"$/);
    expectLine(share, 2, /^tributary: --late-share must be a number from 0 to 1, got "2"$/);
    expectLine(
      backfill,
      2,
      /^tributary: nothing has been streamed into the embedded ClickHouse at .*ch1 yet: run `tributary stream --until-caught-up` first/,
    );
    expectLine(
      parity,
      2,
      /^tributary: nothing has been streamed into the embedded ClickHouse at .*ch2 yet: run `tributary stream --until-caught-up --record-served` first/,
    );

    // A stream over an empty log creates the tables and writes nothing: parity says there is nothing to compare.
    const emptyLog = ['--log-dir', join(empty, 'log'), '--clickhouse-dir', join(empty, 'ch3')];
    const [stream] = await clis([[...emptyLog, 'stream', '--until-caught-up']]);
    expect(stream?.status, stream?.stderr).toBe(0);
    const [again] = await clis([[...emptyLog, 'parity']]);
    expectLine(
      again,
      2,
      /^tributary: no impressions have been streamed into the embedded ClickHouse at .*ch3 yet: run /,
    );
  });

  it('runs through npx without npm warnings (no unknown keys in .npmrc)', { timeout: 30_000 }, () => {
    const r = spawnSync('npx', ['tributary', '--help'], { encoding: 'utf8', env });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Usage: tributary/);
    expect(r.stderr).not.toMatch(/npm warn/i);
  });

  it('refuses a demo whose port is taken before doing any work', { timeout: 30_000 }, async () => {
    const taken = createServer().listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const { port } = taken.address() as AddressInfo;
    const [r] = await clis([['demo', '--port', String(port), '--out', join(dir, 'demo-port')]]);
    taken.close();
    expect(r?.status, r?.stderr).toBe(2);
    expect(r?.stderr).toContain(`tributary: port ${port} is taken: pass --port N (0 = any free port) or --no-serve`);
  });

  it("prints the effective configuration with secrets masked, and examples in the commands' help", async () => {
    const [config, ...helps] = await clis([
      ['--valkey', 'redis://:s3cret@cache:6379', '--partitions', '6', 'config'],
      ...['generate', 'stream', 'config'].map((c) => [c, '--help']),
    ]);
    expect(config?.status).toBe(0);
    expect(config?.stdout).toContain('valkey: redis://:***@cache:6379');
    expect(config?.stdout).toMatch(/^kafka: \(embedded\)$/m);
    expect(config?.stdout).toMatch(/^logDir: .*log$/m);
    expect(config?.stdout).toMatch(/^partitions: 6$/m);
    expect(config?.stdout).not.toContain('s3cret');
    for (const h of helps) {
      expect(h.status).toBe(0);
      expect(h.stdout).toMatch(/Examples?:\n {2}tributary /);
    }
  }, 60_000);
});
