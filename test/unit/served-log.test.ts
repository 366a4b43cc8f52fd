import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { AdRequest } from '../../src/events/types.ts';
import type { Ranking } from '../../src/scoring/ranker.ts';
import { ServedLog, type ServedRecord } from '../../src/scoring/served-log.ts';

const candidate = (ad: string) => ({ ad_id: ad, campaign_id: 'c', advertiser_id: 'a', category: 'k', bid: 1 });

describe('served-vector log', () => {
  it('writes the sampled rankings, each candidate with its vector in request order, in batches', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'served-')), 'served.ndjson');
    let draw = 0;
    // Every other ranking is drawn below the rate; three records fill a batch.
    const log = new ServedLog({ path, sampleRate: 0.5, maxPending: 3 }, pino({ level: 'silent' }), () => draw++ % 2);
    for (let i = 0; i < 10; i++) {
      const req: AdRequest = {
        request_id: `r${i}`,
        event_time: 1_800_000_000_000 + i,
        user_id: 'u',
        publisher_id: 'p',
        category: null,
        device: 'd',
        os: 'o',
        candidates: [candidate('x'), candidate('y')],
      };
      const ranking: Ranking = {
        request_id: req.request_id,
        event_time: req.event_time,
        scored_time: req.event_time + 1,
        model_version: 'abc',
        features_defaulted: false,
        ranked: [],
      };
      log.offer(ranking, req, new Float64Array([i, 0.5, i + 100, 0.25]));
    }
    await log.close();
    const records = readFileSync(path, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as ServedRecord);
    expect(records.map((r) => r.request_id)).toEqual(['r0', 'r2', 'r4', 'r6', 'r8']);
    expect(records[1]).toMatchObject({
      model_version: 'abc',
      event_time: 1_800_000_000_002,
      candidates: [
        { ad_id: 'x', vector: [2, 0.5] },
        { ad_id: 'y', vector: [102, 0.25] },
      ],
    });
    expect(log.written).toBe(5);
  });
});
