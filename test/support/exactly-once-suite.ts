// Exactly-once effect: a stream process SIGKILLed at random moments (start-up, rebalance, mid-batch) and restarted
// ends with the same online (Valkey: a node, or a Cluster) and offline (ClickHouse) state, served vectors included, as
// an uninterrupted run over the same log; the log is longer than the retention, so pruning runs while partitions lag
// each other, and `tributary parity` finds nothing on either run.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { connectValkey } from '../../src/online/connect.ts';
import { KAFKA_BROKERS, REGISTRY_URL } from './services.ts';
import { exited, offlineState, parity, StreamRuns, sleep } from './stream-runs.ts';
import { publishScenario } from './streaming.ts';

export interface ExactlyOnceTarget {
  name: string;
  /** Told apart in namespaces. */
  tag: string;
  url: string;
  kills: number;
  /** Impressions per day of the ten-day log. */
  perDay: number;
}

export async function exactlyOnceSuite(target: ExactlyOnceTarget): Promise<void> {
  const kafka = createKafka(KAFKA_BROKERS);
  const valkey = await connectValkey(target.url, {});
  const runs = new StreamRuns(kafka, valkey, target.url, new FeatureSet(DEFAULT_GROUPS));
  afterAll(() => {
    runs.stopAll();
    valkey.disconnect();
  });
  const stamp = Date.now();

  describe(`exactly-once effect under SIGKILL (${target.name})`, () => {
    it(`killed ${target.kills} times equals uninterrupted, online, offline and served; parity holds on both`, async () => {
      const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
      await serde.prepare(EVENT_KINDS);
      // Ten days: past the retention, so the stream prunes; clicks' partitions span days per batch while
      // impressions' span hours, so partitions lag each other.
      const scenario = { seed: 7, days: 10, impressionsPerDay: target.perDay, lateShare: 0.03, duplicateShare: 0.03 };
      const clean = `eo${stamp}${target.tag}c.`;
      const killed = `eo${stamp}${target.tag}k.`;
      await publishScenario(kafka, serde, clean, scenario);
      await publishScenario(kafka, serde, killed, scenario);
      const dirs = {
        clean: mkdtempSync(join(tmpdir(), 'eo-clean-')),
        killed: mkdtempSync(join(tmpdir(), 'eo-killed-')),
      };

      await runs.runToEnd(clean, dirs.clean);

      // Odd kills come early (start-up, joining the group while the last victim's session expires), even ones late
      // enough to land mid-batch.
      let kills = 0;
      while (kills < target.kills) {
        const child = runs.start(killed, dirs.killed);
        await sleep(kills % 2 === 0 ? 300 + Math.random() * 6000 : 6000 + Math.random() * 3000);
        if (await runs.caughtUp(killed)) {
          child.kill('SIGTERM');
          await exited(child);
          break;
        }
        child.kill('SIGKILL');
        await exited(child);
        kills++;
      }
      expect(kills, 'caught up before every kill landed: lengthen the log').toBe(target.kills);
      await runs.runToEnd(killed, dirs.killed);

      const lines = [await runs.pruneLine(clean), await runs.pruneLine(killed)];
      expect(lines[1]?.progress).toEqual(lines[0]?.progress);
      const before = lines[0]?.before as number;
      const [a, b] = [await runs.onlineState(clean, before), await runs.onlineState(killed, before)];
      expect(Object.keys(a).length).toBeGreaterThan(1000);
      expect(b).toEqual(a);
      const [oa, ob] = [await offlineState(dirs.clean), await offlineState(dirs.killed)];
      expect((oa.impressions as { n: string }[])[0]?.n).not.toBe('0');
      const served = (oa.served as { n: string; u: string }[])[0];
      expect(served?.n).not.toBe('0');
      expect(served?.n).toBe(served?.u);
      expect(ob).toEqual(oa);
      for (const dir of [dirs.clean, dirs.killed]) {
        const p = await parity(dir);
        expect(p.line).toMatch(/mismatches 0 /);
        expect(p.code).toBe(0);
      }
    }, 3_600_000);
  });
}
