// The SQL leg of the parity check on the embedded engine (chdb) in a temp dir: (a) a hand-made log with
// hand-computed values, (b) a generated log streamed through processBatch in interleaved batches, against the
// engine's own point-in-time vectors computed record by record.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { MockClient } from '@confluentinc/schemaregistry';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parityFeatureNames, paritySql, sqlFeatures } from '../../src/backfill/parity-sql.ts';
import type { ReplayRecord } from '../../src/backfill/replay.ts';
import { fromClickHouse, partitionsIn } from '../../src/backfill/sources.ts';
import { topicOf } from '../../src/events/catalog.ts';
import { generate } from '../../src/events/generator.ts';
import { EventSerde } from '../../src/events/serde.ts';
import type { AdClick, AdImpression } from '../../src/events/types.ts';
import { Admission } from '../../src/features/admission.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { count, distinct, type FeatureGroup, groupBy, lastSeen, ratio, sum } from '../../src/features/define.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { entities } from '../../src/features/entities.ts';
import { window } from '../../src/features/window.ts';
import { openClickHouse } from '../../src/offline/clickhouse.ts';
import { ensureOfflineSchema } from '../../src/offline/schema.ts';
import { type ClickRow, type ImpressionRow, OfflineSink, tileRowsOf } from '../../src/offline/sink.ts';
import { MemoryStore } from '../../src/online/memory-store.ts';
import { type LogMessage, processBatch } from '../../src/streams/processor.ts';
import { getOrCreate } from '../../src/util/map.ts';
import { startClickHouseHttp } from '../support/clickhouse-http.ts';
import { ReferenceStore } from '../support/reference.ts';

const LATENESS_MS = 3600_000;
const MIN = 60_000;

let dir: string;
let db = 0;
const clients: ClickHouseClient[] = [];

/** A fresh database in the one data dir (the engine binds one dir per process). */
async function open(): Promise<ClickHouseClient> {
  db++;
  const client = await openClickHouse({ dir, database: `parity${db}` });
  clients.push(client);
  await ensureOfflineSchema(client);
  return client;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tributary-parity-'));
});
afterAll(async () => {
  for (const c of clients) await c.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('paritySql on a hand-made log', () => {
  const W10 = window('10m', '1m');
  const W2h = window('2h', '1h');
  const groups: FeatureGroup[] = [
    groupBy(entities.ad, {
      description: 'ad',
      aggregations: [
        count('impressions', 'impression', [W10]),
        count('clicks', 'click', [W10]),
        lastSeen('since_click', 'click', [W10]),
      ],
      ratios: [ratio('ctr', 'clicks', 'impressions', { rate: 0.1, weight: 10 })],
    }),
    groupBy(entities.user, {
      description: 'user',
      aggregations: [
        count('impressions', 'impression', [W10, W2h]),
        sum('spend', 'impression', 'bid', [W10]),
        // Coarse units so that a bid lands on a half unit: 0.125 * 4 = 0.5 rounds up (JS), not to even.
        sum('spend_coarse', 'impression', 'bid', [W10], 4),
        distinct('ads', 'impression', 'ad_id', [W10]),
      ],
    }),
    groupBy(entities.userCategory, {
      description: 'user x category',
      aggregations: [count('impressions', 'impression', [W10])],
    }),
  ];
  const NAMES = [
    'ad__impressions_10m',
    'ad__clicks_10m',
    'ad__since_click_10m',
    'ad__ctr_10m',
    'user__impressions_10m',
    'user__impressions_2h',
    'user__spend_10m',
    'user__spend_coarse_10m',
    'user__ads_10m',
    'user_category__impressions_10m',
  ];
  const T0 = Date.UTC(2026, 0, 15, 12, 0, 0); // 12:00:00.000, a tile boundary for 1m and 1h tiles
  const at = (minutes: number, ms = 0) => T0 + minutes * MIN + ms;

  const imp = (
    id: string,
    time: number,
    ad: string,
    user: string,
    category: string,
    bid: number | null,
    coords: { partition: number; offset: number; batch_seq: number },
  ): ImpressionRow => ({
    event_id: id,
    event_time: time,
    request_id: null,
    user_id: user,
    ad_id: ad,
    campaign_id: 'cmp-1',
    advertiser_id: 'adv-1',
    category,
    publisher_id: 'pub-1',
    device: 'mobile',
    os: 'ios',
    position: 1,
    bid,
    topic: 'ad_impressions',
    ingest_time: time,
    // Deliberately wrong for the late and duplicate records: the query must recompute admission itself.
    verdict: 'applied',
    ...coords,
  });
  const clk = (id: string, time: number, ad: string, coords: { offset: number; batch_seq: number }): ClickRow => ({
    event_id: id,
    event_time: time,
    impression_id: 'imp-x',
    impression_time: time - 1000,
    user_id: 'u1',
    ad_id: ad,
    campaign_id: 'cmp-1',
    advertiser_id: 'adv-1',
    category: 'c1',
    publisher_id: 'pub-1',
    device: 'mobile',
    os: 'ios',
    topic: 'ad_clicks',
    partition: 0,
    ingest_time: time,
    verdict: 'applied',
    ...coords,
  });
  const p0 = (offset: number, batch_seq: number) => ({ partition: 0, offset, batch_seq });
  const p1 = (offset: number, batch_seq: number) => ({ partition: 1, offset, batch_seq });

  // Log order is (batch_seq, offset): batches 1..6.
  const batches: { impressions: ImpressionRow[]; clicks: ClickRow[] }[] = [
    {
      impressions: [
        imp('A1', at(0), 'a2', 'u1', 'c1', 0.5, p0(0, 1)),
        imp('A2', at(1, 30_000), 'a1', 'u1', 'c1', 0.25, p0(1, 1)),
      ],
      clicks: [],
    },
    {
      impressions: [],
      clicks: [
        clk('K1', at(2, 59_999), 'a1', { offset: 0, batch_seq: 2 }), // tile 12:02: inside B's window
        clk('K2', at(3), 'a1', { offset: 1, batch_seq: 2 }), // tile 12:03 = B's own tile: outside it
      ],
    },
    {
      impressions: [
        imp('A2', at(1, 30_000), 'a1', 'u1', 'c1', 0.25, p0(2, 3)), // duplicate of A2
        imp('L', at(-120), 'a1', 'u1', 'c1', 9, p0(3, 3)), // 10:00 < 12:01:30 - 1h: late
        imp('W', at(-58, -30_000), 'a1', 'u1', 'c1', 0.3, p0(4, 3)), // 11:01:30 = exactly the watermark: on time
        imp('B', at(3), 'a1', 'u1', 'c1', 0.125, p0(5, 3)),
      ],
      clicks: [],
    },
    {
      impressions: [
        // Partition 1 has its own watermark: 10:00 is on time here (first record of the partition).
        imp('E2', at(-120), 'a2', 'u3', 'c1', 1, p1(0, 4)),
        // Earlier than B in time (same tile as K1), later in the log: must not count for B.
        imp('E', at(2, 30_000), 'a1', 'u2', 'c1', 2, p1(1, 4)),
      ],
      clicks: [],
    },
    { impressions: [], clicks: [clk('K3', at(1), 'a1', { offset: 2, batch_seq: 5 })] }, // in B's window, after B
    { impressions: [imp('C', at(12), 'a1', 'u1', 'c2', 4, p0(6, 6))], clicks: [] },
  ];

  // Hand-computed, in NAMES order. Defaults: counts 0, since_click = 600 s, ctr = prior 0.1. spend_coarse counts
  // quarters: bids 0.5 -> 2, 0.25 -> 1, 0.125 -> 1 (a half, rounded up).
  const expected: Record<string, number[]> = {
    // First record: nothing before it.
    A1: [0, 0, 600, 0.1, 0, 0, 0, 0, 0, 0],
    // Sees A1 (ad a2, user u1, c1, 12:00, bid 0.5); 2h window = hour tiles 10, 11: empty.
    A2: [0, 0, 600, 0.1, 1, 0, 0.5, 0.5, 1, 1],
    // 11:01:30: everything before it in the log is later in time; L (10:00) would be in its 2h window if applied.
    W: [0, 0, 600, 0.1, 0, 0, 0, 0, 0, 0],
    // Window 11:53..12:02. Ad a1: A2 (the duplicate not again), K1 only (K2 is in 12:03, K3 and E come later).
    // User u1: A1, A2; 2h: W (L is late). Spend 0.5 + 0.25; ads {a2, a1}.
    B: [1, 1, 0.001, 2 / 11, 2, 1, 0.75, 0.75, 2, 2],
    // Partition 1, first record.
    E2: [0, 0, 600, 0.1, 0, 0, 0, 0, 0, 0],
    // 12:02:30, window 11:52..12:01: ad a1 has A2; B (12:03) precedes in the log but is later in time; K1 is in
    // E's own tile. User u2: nothing.
    E: [1, 0, 600, 1 / 11, 0, 0, 0, 0, 0, 0],
    // 12:12, window 12:02..12:11: ad a1 has B and E; clicks K1, K2 (K3 is at 12:01); last click K2 at 12:03.
    // User u1: B only; 2h: W. user_category (u1, c2): B is c1, so 0.
    C: [2, 2, 540, 3 / 12, 1, 1, 0.125, 0.25, 1, 0],
  };

  it('computes the hand-computed values, recomputing admission', async () => {
    const client = await open();
    const sink = new OfflineSink(client);
    for (const [i, b] of batches.entries()) await sink.writeBatch(`b${i}`, { ...b, tiles: [] });

    expect(parityFeatureNames(groups)).toEqual(NAMES);
    expect(new FeatureSet(groups).names).toEqual(NAMES);
    const rs = await client.query({ query: paritySql(groups, { allowedLatenessMs: LATENESS_MS }), format: 'JSON' });
    const result = await rs.json<Record<string, unknown>>();
    expect(result.meta?.map((m) => m.name)).toEqual(['event_id', ...NAMES]);
    expect(result.meta?.slice(1).every((m) => m.type === 'Float64')).toBe(true);
    // One row per applied impression, in log order: the duplicate A2 and the late L are not there.
    expect(result.data.map((r) => r.event_id)).toEqual(['A1', 'A2', 'W', 'B', 'E2', 'E', 'C']);

    const got = await sqlFeatures(client, groups, { allowedLatenessMs: LATENESS_MS });
    for (const [id, want] of Object.entries(expected)) {
      const v = got.get(id);
      expect(v, id).toBeDefined();
      want.forEach((x, i) => {
        expect(v?.[i], `${id} ${NAMES[i]}`).toBeCloseTo(x, 12);
      });
    }

    // The engine agrees on this log too (read at each impression before the rest of the log is applied).
    const reference = engineReplay(groups, batches);
    expect([...reference.keys()]).toEqual([...got.keys()]);
    for (const [id, v] of reference) expect([...(got.get(id) ?? [])], id).toEqual([...v]);

    // Lateness is a parameter: with 3 h allowed, L is on time and W's 2h window now holds it.
    const lax = await sqlFeatures(client, groups, { allowedLatenessMs: 3 * LATENESS_MS, materialize: false });
    expect([...lax.keys()]).toContain('L');
    expect(lax.get('W')?.[5]).toBe(1);
  });

  /** The engine, record by record in log order, on already-decoded rows (no serde needed here). */
  function engineReplay(
    gs: FeatureGroup[],
    log: { impressions: ImpressionRow[]; clicks: ClickRow[] }[],
  ): Map<string, Float64Array> {
    const features = new FeatureSet(gs);
    const store = new ReferenceStore(features);
    const admissions = new Map<string, Admission>();
    const out = new Map<string, Float64Array>();
    const records = log.flatMap((b) => [
      ...b.impressions.map((r) => ({ source: 'impression' as const, r })),
      ...b.clicks.map((r) => ({ source: 'click' as const, r })),
    ]);
    records.sort((x, y) => x.r.batch_seq - y.r.batch_seq || x.r.offset - y.r.offset);
    for (const { source, r } of records) {
      const key = `${r.topic}/${r.partition}`;
      const a = getOrCreate(admissions, key, () => new Admission(LATENESS_MS));
      if (a.admit(r.event_id, r.event_time) !== 'applied') continue;
      if (source === 'impression') {
        const plan = features.plan([r], r.event_time);
        out.set(r.event_id, features.assemble(plan, store.readSync(plan.requests))[0] as Float64Array);
      }
      store.apply(source, r as AdImpression | AdClick);
    }
    return out;
  }
});

/** 32-bit FNV-1a. */
function fnv(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

interface Stream {
  source: 'impression' | 'click';
  topic: string;
  partition: number;
  messages: LogMessage[];
}
interface Chunk {
  stream: Stream;
  batchSeq: number;
  messages: LogMessage[];
}

const PARTITIONS = 3;
/** Batches cut by ingest time: with the log below, impression batches hold ~100 messages. */
const SLICE_MS = 2 * 3600_000;

/**
 * The log as Kafka would hold it (3 partitions per topic by user_id), cut into batches and put in the order a
 * consumer applies them: per time slice, every partition's batch in turn (round-robin, the first partition
 * rotating), batch_seq increasing.
 */
function streamLog(log: ReturnType<typeof generate>, serde: EventSerde): { streams: Stream[]; chunks: Chunk[] } {
  const streams: Stream[] = [];
  for (const source of ['impression', 'click'] as const) {
    for (let partition = 0; partition < PARTITIONS; partition++) {
      streams.push({ source, topic: topicOf(source), partition, messages: [] });
    }
  }
  const sliceOf: number[][] = streams.map(() => []);
  for (const { record, ingestTime } of log) {
    if (record.kind !== 'impression' && record.kind !== 'click') continue;
    const e = record.event;
    const si = (record.kind === 'impression' ? 0 : PARTITIONS) + (fnv(e.user_id) % PARTITIONS);
    const s = streams[si] as Stream;
    const value =
      record.kind === 'impression' ? serde.encode('impression', record.event) : serde.encode('click', record.event);
    s.messages.push({
      offset: String(s.messages.length),
      timestamp: String(ingestTime),
      key: Buffer.from(e.user_id),
      value,
    });
    sliceOf[si]?.push(Math.floor(ingestTime / SLICE_MS));
  }
  const chunks: Chunk[] = [];
  const first = Math.min(...sliceOf.flat());
  const last = Math.max(...sliceOf.flat());
  let seq = 0;
  for (let slice = first; slice <= last; slice++) {
    for (let k = 0; k < streams.length; k++) {
      const si = (k + slice) % streams.length;
      const s = streams[si] as Stream;
      const slices = sliceOf[si] as number[];
      const messages = s.messages.filter((_, i) => slices[i] === slice);
      if (messages.length > 0) chunks.push({ stream: s, batchSeq: ++seq, messages });
    }
  }
  return { streams, chunks };
}

describe('paritySql on a generated, streamed log', () => {
  it('equals the engine for every applied impression and every feature', { timeout: 120_000 }, async () => {
    const serde = new EventSerde(new MockClient());
    await serde.prepare(['impression', 'click']);
    const features = new FeatureSet(DEFAULT_GROUPS);
    expect(parityFeatureNames(DEFAULT_GROUPS)).toEqual(features.names);
    const log = generate({
      seed: 11,
      start: Date.UTC(2026, 5, 1),
      days: 1,
      impressionsPerDay: 3000,
      users: 300,
      ads: 120,
      campaigns: 30,
      advertisers: 10,
      categories: 8,
      publishers: 12,
      lateShare: 0.05,
      duplicateShare: 0.03,
    });
    const { chunks } = streamLog(log, serde);
    const impressionBatches = chunks.filter((c) => c.stream.source === 'impression').map((c) => c.messages.length);
    expect(Math.max(...impressionBatches)).toBeLessThan(200); // batches of ~100, not whole partitions

    // The stream: batches through processBatch, rows to the offline store.
    const client = await open();
    const sink = new OfflineSink(client);
    const streamAdmission = new Map<Stream, Admission>();
    const verdicts = new Map<string, string>();
    for (const c of chunks) {
      const a = getOrCreate(streamAdmission, c.stream, () => new Admission(LATENESS_MS));
      const out = await processBatch(
        c.stream.source,
        c.stream.topic,
        c.stream.partition,
        c.batchSeq,
        c.messages,
        features,
        serde,
        a,
      );
      expect(out.counts.invalid).toBe(0);
      const batchId = `${c.stream.topic}/${c.stream.partition}/${out.firstOffset}-${out.lastOffset}`;
      await sink.writeBatch(batchId, {
        impressions: out.impressions,
        clicks: out.clicks,
        tiles: tileRowsOf(features, out.admitted, batchId),
      });
      for (const r of [...out.impressions, ...out.clicks])
        verdicts.set(`${r.topic}/${r.partition}/${r.offset}`, r.verdict);
    }

    // The reference: the same batches in the same order, record by record, each applied impression's vector read
    // just before it is applied (so exactly the records before it in (batch_seq, offset) order are in the store).
    const store = new MemoryStore(features);
    const admissions = new Map<Stream, Admission>();
    const reference = new Map<string, Float64Array>();
    const counts = { applied: 0, late: 0, duplicate: 0 };
    for (const c of chunks) {
      const a = getOrCreate(admissions, c.stream, () => new Admission(LATENESS_MS));
      for (const m of c.messages) {
        const { topic, partition, source } = c.stream;
        const out = await processBatch(source, topic, partition, c.batchSeq, [m], features, serde, a);
        const row = out.impressions[0] ?? out.clicks[0];
        if (!row) throw new Error('record not decoded');
        counts[row.verdict]++;
        expect(row.verdict).toBe(verdicts.get(`${topic}/${partition}/${m.offset}`));
        if (row.verdict === 'applied' && source === 'impression') {
          const imp = out.impressions[0] as AdImpression;
          const plan = features.plan([imp], imp.event_time);
          const [v] = features.assemble(plan, store.readSync(plan.requests));
          expect(reference.has(imp.event_id)).toBe(false);
          reference.set(imp.event_id, v as Float64Array);
        }
        await store.applyBatch(out.admitted, `${topic}/${partition}`, Number(m.offset));
      }
    }
    // The scenario has all three verdicts in numbers.
    expect(counts.late).toBeGreaterThan(30);
    expect(counts.duplicate).toBeGreaterThan(30);

    const started = performance.now();
    const sql = await sqlFeatures(client, DEFAULT_GROUPS, { allowedLatenessMs: LATENESS_MS });
    const seconds = (performance.now() - started) / 1000;
    console.log(`paritySql: ${sql.size} impressions x ${features.names.length} features in ${seconds.toFixed(2)} s`);

    expect(sql.size).toBe(reference.size);
    const exact = features.features.map((f) => f.kind === 'count' || f.kind === 'distinct');
    const mismatches: string[] = [];
    let nonzero = 0;
    for (const [id, want] of reference) {
      const got = sql.get(id);
      if (!got) {
        mismatches.push(`${id}: missing`);
        continue;
      }
      for (let i = 0; i < want.length; i++) {
        const w = want[i] as number;
        const g = got[i] as number;
        if (w !== features.features[i]?.default) nonzero++;
        const ok = exact[i] ? g === w : Math.abs(g - w) <= 1e-9;
        if (!ok) mismatches.push(`${id} ${features.names[i]}: sql ${g}, engine ${w}`);
      }
    }
    expect({ count: mismatches.length, first: mismatches.slice(0, 20) }).toEqual({ count: 0, first: [] });
    // Not a vacuous comparison: a good share of the values are not the defaults.
    expect(nonzero).toBeGreaterThan((reference.size * features.names.length) / 3);

    // Through a server's HTTP interface (a stand-in answered by the same engine and database): the same SQL gives
    // the same vectors, and the backfill reads the same records in the same order.
    const http = await startClickHouseHttp(dir);
    const server = await openClickHouse({ url: http.url, dir: 'unused', database: `parity${db}` });
    try {
      expect(await sqlFeatures(server, DEFAULT_GROUPS, { allowedLatenessMs: LATENESS_MS })).toEqual(sql);
      const records = async (c: ClickHouseClient) => {
        const out: ReplayRecord[] = [];
        for await (const r of fromClickHouse(c)) out.push(r);
        return out;
      };
      const fromServer = await records(server);
      expect(fromServer.length).toBe(chunks.reduce((n, c) => n + c.messages.length, 0));
      expect(fromServer).toEqual(await records(client));
      expect(await partitionsIn(server)).toBe(await partitionsIn(client));
    } finally {
      await server.close();
      await http.close();
    }
  });
});
