// `tributary produce` publishes the real TalkingData sample: exactly one impression per row, one click per
// attributed row, nothing else, nothing lost.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { topicOf } from '../../src/events/catalog.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { countSince, endOffsets, readRange } from '../support/kafka.ts';
import { cliWithServers, KAFKA_BROKERS, REGISTRY_URL } from '../support/services.ts';
import { skipWithoutTalkingData, TALKINGDATA_SAMPLE } from '../support/talkingdata.ts';

// A namespace of this run's own: the default topics are the developer's (the README's tour reads them).
const ns = `prod${Date.now()}.`;
const cli = (...args: string[]) => cliWithServers('--namespace', ns, ...args);

const kafka = createKafka(KAFKA_BROKERS);
const admin = kafka.admin();
beforeAll(() => admin.connect());
afterAll(() => admin.disconnect());

describe('produce --file', () => {
  it('publishes exactly the rows of the shared TalkingData sample', async (ctx) => {
    skipWithoutTalkingData(ctx);
    const imp = topicOf('impression', ns);
    const clk = topicOf('click', ns);
    const before = { imp: await endOffsets(admin, imp), clk: await endOffsets(admin, clk) };
    const { stdout } = await cli('produce', '--file', TALKINGDATA_SAMPLE, '--mapping', 'talkingdata');
    expect(JSON.parse(stdout)).toEqual({ rows: 100_000, published: 100_227, bad_rows: 0 });
    const after = { imp: await endOffsets(admin, imp), clk: await endOffsets(admin, clk) };
    expect(countSince(before.imp, after.imp)).toBe(100_000);
    expect(countSince(before.clk, after.clk)).toBe(227);

    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    const clicks = await Promise.all(
      (await readRange(kafka, clk, before.clk, after.clk)).map((b) => serde.decode('click', b)),
    );
    const impressions = await readRange(kafka, imp, before.imp, after.imp);
    const ids = new Set<string>();
    for (const b of impressions) ids.add((await serde.decode('impression', b)).event_id);
    // Rows are lines 2..100001 of the file; every one is there once.
    expect(ids.size).toBe(100_000);
    for (const line of [2, 50_000, 100_001]) expect(ids.has(`td-${line}`)).toBe(true);
    for (const c of clicks) expect(ids.has(c.impression_id)).toBe(true);
  }, 180_000);

  it('reports bad rows by line, publishes the good ones, and exits 1', async () => {
    const f = join(mkdtempSync(join(tmpdir(), 'tributary-produce-')), 'mixed.csv');
    writeFileSync(
      f,
      'ip,app,device,os,channel,click_time,attributed_time,is_attributed\n' +
        '1,12,1,13,497,2017-11-07 9:30,,0\n' +
        '2,12,1,13,497,not-a-time,,0\n' +
        '3,12,1,13,497,2017-11-07 9:31,,0\n',
    );
    const r = await cli('produce', '--file', f).then(
      () => ({ code: 0, stdout: '', stderr: '' }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${f}:3: event_time "not-a-time" is not a time`);
    expect(JSON.parse(r.stdout)).toEqual({ rows: 3, published: 2, bad_rows: 1 });
  });
});
