// Exactly-once effect: a stream process SIGKILLed at random moments and restarted ends with the same online
// (Valkey) and offline (ClickHouse) state as an uninterrupted run over the same log.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Valkey } from 'iovalkey';
import { afterAll, describe, expect, it } from 'vitest';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { EVENT_KINDS } from '../../src/events/types.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import { caughtUp, publishScenario } from '../support/streaming.ts';

const kafka = createKafka(KAFKA_BROKERS);
const valkey = new Valkey(VALKEY_URL);
afterAll(() => valkey.disconnect());
const stamp = Date.now();

function startStream(ns: string, dir: string): ChildProcess {
  return spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'src/cli/main.ts',
      'stream',
      '--namespace',
      ns,
      '--max-batch',
      '150',
      '--allowed-lateness',
      '1h',
    ],
    {
      env: {
        ...process.env,
        TRIBUTARY_KAFKA: KAFKA_BROKERS.join(','),
        TRIBUTARY_SCHEMA_REGISTRY: REGISTRY_URL,
        TRIBUTARY_VALKEY: VALKEY_URL,
        TRIBUTARY_CLICKHOUSE_DIR: dir,
        TRIBUTARY_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    },
  );
}

const exited = (p: ChildProcess) =>
  new Promise<void>((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once('exit', () => r())));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function runToEnd(ns: string, dir: string): Promise<void> {
  const child = startStream(ns, dir);
  const deadline = Date.now() + 120_000;
  while (!(await caughtUp(kafka, valkey, ns, `${ns}tributary-stream`))) {
    if (Date.now() > deadline || child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`stream ${ns} did not catch up (exit ${child.exitCode ?? child.signalCode})`);
    }
    await sleep(300);
  }
  child.kill('SIGTERM');
  await exited(child);
}

/**
 * The whole online state of a namespace, keys without the namespace, bookkeeping left out: batch markers (they name
 * batch ends) and the prune marks (where pruning got to, which depends on when each process pruned).
 */
async function onlineState(ns: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const keys = (await valkey.keys(`${ns}tb:*`)).filter((k) => !k.includes('{ckpt|') && !k.endsWith('tb:@pruned'));
  for (const k of keys.sort()) {
    const type = await valkey.type(k);
    const name = k.slice(ns.length);
    if (type === 'hash') {
      const h = await valkey.hgetall(k);
      out[name] = Object.fromEntries(Object.entries(h).filter(([f]) => !f.startsWith('@')));
    } else {
      out[name] = (await valkey.smembers(k)).sort();
    }
  }
  return out;
}

async function offlineState(dir: string) {
  const ch = await openClickHouse({ dir });
  const q = async (query: string) => (await ch.query({ query, format: 'JSONEachRow' })).json();
  const state = {
    impressions: await q(
      'SELECT count() AS n, sum(cityHash64(partition, offset, event_id, verdict, ingest_time)) AS h FROM impressions',
    ),
    clicks: await q(
      'SELECT count() AS n, sum(cityHash64(partition, offset, event_id, verdict, ingest_time)) AS h FROM clicks',
    ),
    tiles: await q('SELECT entity, field, op, value FROM feature_tiles_current ORDER BY entity, field, op'),
  };
  await ch.close();
  return state;
}

describe('exactly-once effect under SIGKILL', () => {
  it('killed-and-restarted equals uninterrupted, online and offline', async () => {
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    const scenario = { seed: 33, days: 1, impressionsPerDay: 12_000, lateShare: 0.03, duplicateShare: 0.03 };
    const clean = `eo${stamp}c.`;
    const killed = `eo${stamp}k.`;
    await publishScenario(kafka, serde, clean, scenario);
    await publishScenario(kafka, serde, killed, scenario);
    const dirs = { clean: mkdtempSync(join(tmpdir(), 'eo-clean-')), killed: mkdtempSync(join(tmpdir(), 'eo-killed-')) };

    await runToEnd(clean, dirs.clean);

    let kills = 0;
    for (const delay of [3500, 4500, 5500, 6500]) {
      const child = startStream(killed, dirs.killed);
      await sleep(delay + Math.floor(Math.random() * 800));
      if (await caughtUp(kafka, valkey, killed, `${killed}tributary-stream`)) {
        child.kill('SIGTERM');
        await exited(child);
        break;
      }
      child.kill('SIGKILL');
      await exited(child);
      kills++;
    }
    expect(kills).toBeGreaterThan(0);
    await runToEnd(killed, dirs.killed);

    const [a, b] = [await onlineState(clean), await onlineState(killed)];
    expect(Object.keys(a).length).toBeGreaterThan(1000);
    expect(b).toEqual(a);
    const [oa, ob] = [await offlineState(dirs.clean), await offlineState(dirs.killed)];
    expect((oa.impressions as { n: string }[])[0]?.n).not.toBe('0');
    expect(ob).toEqual(oa);
  }, 300_000);
});
