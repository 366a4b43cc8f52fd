// Scale-out: three `tributary stream` processes in one group over six partitions per topic, all writing Valkey and
// ClickHouse and recording served vectors; while the log's end is still being produced one is killed (SIGKILL), one
// added, one stopped (SIGTERM), one more killed and one added. The online state and the offline tables (served
// vectors included) end equal to one uninterrupted process's over the same log, and `tributary parity` finds 0
// mismatches in both runs. The embedded ClickHouse opens its data in one process only, so the processes write a
// ClickHouse server's HTTP interface: the stand-in of test/support/clickhouse-http.ts, the same engine answering
// in this process.
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
import { startClickHouseHttp } from '../support/clickhouse-http.ts';
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

describe('many stream processes in one group', () => {
  it('killed, stopped and added during the run, end as one uninterrupted process; parity holds on both', {
    timeout: 900_000,
  }, async () => {
    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    const scenario = { seed: 11, days: 4, impressionsPerDay: 2000, lateShare: 0.03, duplicateShare: 0.03 };
    const stamp = Date.now();
    const single = `sp${stamp}s.`;
    const many = `sp${stamp}m.`;
    // Published alike (the held-back end after the bad messages), so offsets match between the runs.
    await (await publishScenario(kafka, serde, single, scenario, { partitions: 6, holdBack: 0.7 })).publishRest();
    // The end of the log is produced through the changes, so each lands while there is work.
    const { publishRest } = await publishScenario(kafka, serde, many, scenario, { partitions: 6, holdBack: 0.7 });
    const dirs = { single: mkdtempSync(join(tmpdir(), 'sp-single-')), many: mkdtempSync(join(tmpdir(), 'sp-many-')) };

    await runs.runToEnd(single, dirs.single);

    const server = await startClickHouseHttp(dirs.many);
    try {
      const at = { url: server.url };
      const processes = [runs.start(many, at), runs.start(many, at), runs.start(many, at)];
      const producing = publishRest({ rounds: 30, pauseMs: 400 });
      const events: string[] = [];
      const step = async (what: string, act: () => Promise<void> | void) => {
        await sleep(1500 + Math.random() * 1000);
        await act();
        events.push(`${what}${(await runs.caughtUp(many)) ? ' (caught up)' : ''}`);
      };
      const stop = async (signal: NodeJS.Signals, index: number) => {
        const victim = processes.splice(index, 1)[0];
        victim?.kill(signal);
        if (victim) await exited(victim);
      };
      await step('SIGKILL a process', () => stop('SIGKILL', 1));
      await step('add a process', () => {
        processes.push(runs.start(many, at));
      });
      await step('SIGTERM a process', () => stop('SIGTERM', 0));
      await step('SIGKILL a process', () => stop('SIGKILL', 1));
      await step('add a process', () => {
        processes.push(runs.start(many, at));
      });
      await producing;
      console.log(`stream processes: ${events.join(', ')}; ${processes.length} at the end`);
      await runs.untilCaughtUp(many, processes);

      const lines = [await runs.pruneLine(single), await runs.pruneLine(many)];
      expect(Object.keys(lines[0]?.progress ?? {})).toHaveLength(12);
      expect(lines[1]?.progress).toEqual(lines[0]?.progress);
      const before = lines[0]?.before as number;
      const [a, b] = [await runs.onlineState(single, before), await runs.onlineState(many, before)];
      expect(Object.keys(a).length).toBeGreaterThan(1000);
      expect(b).toEqual(a);
      const [oa, ob] = [await offlineState(dirs.single), await offlineState(dirs.many)];
      expect((oa.impressions as { n: string }[])[0]?.n).not.toBe('0');
      const served = (oa.served as { n: string; u: string }[])[0];
      expect(Number(served?.n)).toBeGreaterThan(0);
      expect(served?.n).toBe(served?.u);
      expect(ob).toEqual(oa);
      for (const run of [dirs.single, at]) {
        const p = await parity(run);
        expect(p.line).toMatch(/mismatches 0 /);
        expect(p.code).toBe(0);
      }
    } finally {
      await server.close();
    }
  });
});
