import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadMapping, parseTime } from '../../src/events/mapping.ts';
import { type RowResult, readRows } from '../../src/events/rows.ts';

const dir = mkdtempSync(join(tmpdir(), 'tributary-map-'));
async function collect(path: string): Promise<RowResult[]> {
  const out: RowResult[] = [];
  for await (const r of readRows(path, loadMapping('talkingdata'), undefined, Date.UTC(2026, 0, 1))) out.push(r);
  return out;
}

describe('row mapping', () => {
  it('parses the times the sample uses', () => {
    expect(parseTime('2017-11-07 9:30')).toBe(Date.UTC(2017, 10, 7, 9, 30));
    expect(parseTime('2017-11-07 09:30:15')).toBe(Date.UTC(2017, 10, 7, 9, 30, 15));
    expect(parseTime('1510047000000')).toBe(1510047000000);
    expect(parseTime('soon')).toBeNaN();
  });

  it('maps a TalkingData row to an impression, and an attributed row also to a click', async () => {
    const f = join(dir, 'ok.csv');
    writeFileSync(
      f,
      'ip,app,device,os,channel,click_time,attributed_time,is_attributed\n' +
        '87540,12,1,13,497,2017-11-07 9:30,,0\n' +
        '5,3,1,13,200,2017-11-07 10:00,2017-11-07 10:05,1\n',
    );
    const rows = await collect(f);
    expect(rows).toHaveLength(2);
    const [a, b] = rows as unknown as { line: number; events: { kind: string; event: Record<string, unknown> }[] }[];
    expect(a!.line).toBe(2);
    expect(a!.events).toEqual([
      {
        kind: 'impression',
        event: {
          event_id: 'td-2',
          event_time: Date.UTC(2017, 10, 7, 9, 30),
          request_id: null,
          user_id: '87540',
          ad_id: '12',
          campaign_id: '497',
          advertiser_id: '12',
          category: '12',
          publisher_id: '497',
          device: '1',
          os: '13',
          position: null,
          bid: null,
        },
      },
    ]);
    expect(b!.events.map((e) => e.kind)).toEqual(['impression', 'click']);
    expect(b!.events[1]!.event).toMatchObject({
      impression_id: 'td-3',
      event_time: Date.UTC(2017, 10, 7, 10, 5),
    });
  });

  it('reports every bad row with its line number and reason, and keeps going', async () => {
    const f = join(dir, 'bad.csv');
    writeFileSync(
      f,
      'ip,app,device,os,channel,click_time,attributed_time,is_attributed\n' +
        ',12,1,13,497,2017-11-07 9:30,,0\n' + // line 2: no user
        '1,12,1,13,497,yesterday,,0\n' + // line 3: bad time
        '1,12,1,13,497,1990-01-01 00:00,,0\n' + // line 4: absurd time
        '1,12,1,13,497,2017-11-07 9:30,2017-11-07 9:00,1\n' + // line 5: click before impression
        '1,12,1,13,497,2017-11-07 9:31,,0\n', // line 6: fine
    );
    const rows = await collect(f);
    expect(rows.map((r) => [r.line, 'error' in r ? r.error : 'ok'])).toEqual([
      [2, 'user_id is missing'],
      [3, 'event_time "yesterday" is not a time'],
      [4, 'impression: event_time before 2000-01-01T00:00:00.000Z'],
      [5, 'click: click happens before its impression'],
      [6, 'ok'],
    ]);
  });
});
