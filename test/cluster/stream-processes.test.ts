// Scale-out: three `tributary stream` processes in one group over six partitions per topic, one killed (SIGKILL),
// one stopped and two more added during the run, end with the online and offline state of one uninterrupted process
// over the same log, whose ClickHouse `tributary parity` finds 0 mismatches in. The embedded ClickHouse takes one
// process per data directory, so the offline store is written by a group of its own (`--no-online`, killed and
// restarted once too), as the README describes for split groups; served vectors (parity's first column) are recorded
// only by a process that writes both stores, so that run has none. With a ClickHouse server every process writes both.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Valkey } from 'iovalkey';
import { afterAll, describe, expect, it } from 'vitest';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import { exited, offlineState, parity, StreamRuns, sleep } from '../support/stream-runs.ts';
import { publishScenario } from '../support/streaming.ts';

const kafka = createKafka(KAFKA_BROKERS);
const valkey = new Valkey(VALKEY_URL);
const runs = new StreamRuns(kafka, valkey, VALKEY_URL, new FeatureSet(DEFAULT_GROUPS));
afterAll(() => {
  runs.stopAll();
  valkey.disconnect();
});

const ONLINE = ['--no-offline'];
const OFFLINE = ['--no-online', '--group', 'tributary-offline'];

describe('many stream processes in one group', () => {
  it('killed, stopped and added during the run, end as one uninterrupted process (whose parity holds)', {
    timeout: 900_000,
  }, async () => {
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    const scenario = { seed: 11, days: 6, impressionsPerDay: 2500, lateShare: 0.03, duplicateShare: 0.03 };
    const stamp = Date.now();
    const single = `sp${stamp}s.`;
    const many = `sp${stamp}m.`;
    // Published alike (the held-back end after the bad messages), so offsets match between the runs.
    await (await publishScenario(kafka, serde, single, scenario, { partitions: 6, holdBack: 0.7 })).publishRest();
    // The end of the log is produced through the changes, so each lands while there is work.
    const { publishRest } = await publishScenario(kafka, serde, many, scenario, { partitions: 6, holdBack: 0.7 });
    const dirs = { single: mkdtempSync(join(tmpdir(), 'sp-single-')), many: mkdtempSync(join(tmpdir(), 'sp-many-')) };

    await runs.runToEnd(single, dirs.single);

    let offline = runs.start(many, dirs.many, OFFLINE);
    const online = [runs.start(many, dirs.many, ONLINE), runs.start(many, dirs.many, ONLINE)];
    online.push(runs.start(many, dirs.many, ONLINE));
    const producing = publishRest({ rounds: 30, pauseMs: 400 });
    const events: string[] = [];
    const step = async (what: string, act: () => Promise<void> | void) => {
      await sleep(1500 + Math.random() * 1000);
      await act();
      events.push(`${what}${(await runs.caughtUp(many)) ? ' (caught up)' : ''}`);
    };
    await step('SIGKILL a process', async () => {
      const victim = online.splice(1, 1)[0];
      victim?.kill('SIGKILL');
      if (victim) await exited(victim);
    });
    await step('add a process', () => {
      online.push(runs.start(many, dirs.many, ONLINE));
    });
    await step('SIGKILL the offline process and restart it', async () => {
      offline.kill('SIGKILL');
      await exited(offline);
      offline = runs.start(many, dirs.many, OFFLINE);
    });
    await step('SIGTERM a process', async () => {
      const leaver = online.shift();
      leaver?.kill('SIGTERM');
      if (leaver) await exited(leaver);
    });
    await step('add a process', () => {
      online.push(runs.start(many, dirs.many, ONLINE));
    });
    await producing;
    console.log(`stream processes: ${events.join(', ')}; ${online.length} online processes at the end`);
    await runs.untilCaughtUp(many, online);
    await runs.untilCaughtUp(many, [offline], 'tributary-offline');

    const lines = [await runs.pruneLine(single), await runs.pruneLine(many)];
    expect(Object.keys(lines[0]?.progress ?? {})).toHaveLength(12);
    expect(lines[1]?.progress).toEqual(lines[0]?.progress);
    const before = lines[0]?.before as number;
    const [a, b] = [await runs.onlineState(single, before), await runs.onlineState(many, before)];
    expect(Object.keys(a).length).toBeGreaterThan(1000);
    expect(b).toEqual(a);
    const [{ served, ...oa }, { served: none, ...ob }] = [
      await offlineState(dirs.single),
      await offlineState(dirs.many),
    ];
    expect((oa.impressions as { n: string }[])[0]?.n).not.toBe('0');
    expect(ob).toEqual(oa);
    expect(Number((served as { n: string }[])[0]?.n)).toBeGreaterThan(0);
    expect(Number((none as { n: string }[])[0]?.n)).toBe(0);
    const p = await parity(dirs.single);
    expect(p.line).toMatch(/mismatches 0 /);
    expect(p.code).toBe(0);
  });
});
