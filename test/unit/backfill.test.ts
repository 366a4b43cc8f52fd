// The backfill on an event-log file: point-in-time rows (nothing at or after the impression's moment), labels that
// respect the attribution window, rows held back while their window is open, and a rerun that equals the first.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runBackfill } from '../../src/backfill/run.ts';
import { fromEventFile } from '../../src/backfill/sources.ts';
import { writeEventFile } from '../../src/events/event-file.ts';
import { generate } from '../../src/events/generator.ts';
import type { AdClick, AdImpression } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';

const dir = mkdtempSync(join(tmpdir(), 'backfill-'));
const features = new FeatureSet(DEFAULT_GROUPS);
const HOUR = 3600_000;

async function setup() {
  const log = generate({
    seed: 9,
    days: 1,
    impressionsPerDay: 6000,
    users: 500,
    ads: 80,
    lateShare: 0.03,
    duplicateShare: 0.02,
  });
  const path = join(dir, 'events.ndjson');
  await writeEventFile(path, log);
  return { log, path };
}

function readCsv(path: string) {
  const [header, ...lines] = readFileSync(path, 'utf8').trim().split('\n');
  const cols = (header as string).split(',');
  return lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i], v])));
}

describe('backfill from an event-log file', () => {
  it('writes point-in-time rows with final labels, and a rerun reproduces the file exactly', async () => {
    const { log, path } = await setup();
    const out = join(dir, 'train.csv');
    const opts = {
      features,
      open: () => fromEventFile(path),
      sourceName: 'file',
      attributionMs: HOUR,
      allowedLatenessMs: HOUR,
    };
    const meta = await runBackfill({ ...opts, out });
    const rows = readCsv(out);
    expect(rows.length).toBe(meta.rows);
    expect(JSON.parse(readFileSync(`${out}.meta.json`, 'utf8')).features).toEqual(features.names);

    const events = log.map((r) => r.record).filter((r) => r.kind === 'impression' || r.kind === 'click');
    const imps = new Map(
      events.filter((r) => r.kind === 'impression').map((r) => [r.event.event_id, r.event as AdImpression]),
    );
    const clicks = events.filter((r) => r.kind === 'click').map((r) => r.event as AdClick);
    const horizon = Math.max(...events.map((r) => r.event.event_time));

    // Labels: positive iff a click on it happened within the hour; no row whose hour is still open.
    for (const row of rows) {
      const t = Number(row.event_time);
      expect(t + HOUR).toBeLessThanOrEqual(horizon);
      const clicked = clicks.some((c) => c.impression_id === row.event_id && c.event_time - t <= HOUR);
      expect(row.label, row.event_id).toBe(clicked ? '1' : '0');
    }
    expect(meta.positives).toBeGreaterThan(0);
    expect(meta.held_back).toBeGreaterThan(0);

    // No leakage: an ad's clicks in any window never exceed the clicks that happened before the impression.
    for (const row of rows.filter((_, i) => i % 50 === 0)) {
      const imp = imps.get(row.event_id as string) as AdImpression;
      const before = clicks.filter((c) => c.ad_id === imp.ad_id && c.event_time < imp.event_time).length;
      expect(Number(row.ad__clicks_7d)).toBeLessThanOrEqual(before);
      const userBefore = clicks.filter((c) => c.user_id === imp.user_id && c.event_time < imp.event_time).length;
      expect(Number(row.user__clicks_7d)).toBeLessThanOrEqual(userBefore); // its own (later) click is never seen
    }

    const again = join(dir, 'train-again.csv');
    await runBackfill({ ...opts, out: again });
    expect(readFileSync(again, 'utf8')).toBe(readFileSync(out, 'utf8'));
  }, 60_000);

  it('emits only the chosen features and time range', async () => {
    const { path } = await setup();
    const out = join(dir, 'subset.csv');
    const from = Date.UTC(2026, 10, 1, 6);
    const to = Date.UTC(2026, 10, 1, 12);
    await runBackfill({
      features,
      open: () => fromEventFile(path),
      sourceName: 'file',
      out,
      attributionMs: HOUR,
      allowedLatenessMs: HOUR,
      from,
      to,
      only: ['ad__ctr_24h', 'user__clicks_7d'],
    });
    const rows = readCsv(out);
    expect(Object.keys(rows[0] ?? {}).slice(-2)).toEqual(['ad__ctr_24h', 'user__clicks_7d']);
    for (const r of rows) expect(Number(r.event_time) >= from && Number(r.event_time) < to).toBe(true);
    await expect(
      runBackfill({
        features,
        open: () => fromEventFile(path),
        sourceName: 'file',
        out,
        attributionMs: HOUR,
        allowedLatenessMs: HOUR,
        only: ['nope'],
      }),
    ).rejects.toThrow(/unknown feature "nope"/);
  }, 60_000);
});
