// The backfill's column file against the NDJSON event file of the same log: the same records in the same order,
// and the replay (which takes the column file's key ids instead of interning strings) the same vectors.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Replay, type ReplayRecord } from '../../src/backfill/replay.ts';
import { fromEventFile } from '../../src/backfill/sources.ts';
import { writeEventFile } from '../../src/events/event-file.ts';
import { generate } from '../../src/events/generator.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';

const dir = mkdtempSync(join(tmpdir(), 'column-file-'));
const features = new FeatureSet(DEFAULT_GROUPS);

async function collect(path: string): Promise<ReplayRecord[]> {
  const out: ReplayRecord[] = [];
  for await (const r of fromEventFile(path)) out.push(r);
  return out;
}

describe('column file', () => {
  it('reads back the NDJSON file’s records, and the replay over it computes the same vectors', async () => {
    const log = generate({ seed: 4, days: 1, impressionsPerDay: 20_000, users: 900, ads: 90 }).filter(
      (r) => r.record.kind === 'impression' || r.record.kind === 'click',
    );
    // A non-ASCII id and a null bid: both survive the trip.
    const first = log[0]?.record.event as { event_id: string; bid: number | null };
    first.event_id = 'imp-é-0';
    first.bid = null;
    await writeEventFile(join(dir, 'e.ndjson'), log);
    await writeEventFile(join(dir, 'e.cols'), log);
    const json = await collect(join(dir, 'e.ndjson'));
    const cols = await collect(join(dir, 'e.cols'));
    expect(cols.length).toBe(log.length);
    expect(cols.map(({ source, partition, event }) => ({ source, partition, event }))).toEqual(json);
    expect(cols.every((r) => r.ids !== undefined)).toBe(true);

    const fromJson = new Replay(features, 3600_000, { partitions: 2 });
    const fromCols = new Replay(features, 3600_000, { partitions: 2 });
    let vectors = 0;
    json.forEach((r, i) => {
      const a = fromJson.apply(r);
      const b = fromCols.apply(cols[i] as ReplayRecord);
      expect(b).toEqual(a);
      if (a) vectors++;
    });
    expect(vectors).toBeGreaterThan(15_000);
    expect(fromCols.counts).toEqual(fromJson.counts);
  }, 60_000);

  it('holds impressions and clicks only', async () => {
    const log = generate({ seed: 4, days: 1, impressionsPerDay: 200, candidatesPerRequest: 2 });
    await expect(writeEventFile(join(dir, 'r.cols'), log)).rejects.toThrow(/impressions and clicks only/);
  });
});
