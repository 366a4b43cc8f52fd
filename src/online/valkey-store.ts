// The online store in Valkey. One hash per entity, `tb:{<entity key>}`, holds its windows in the online layout,
// fields "<series>.<block>:<read tile>" (FeatureSet.forEachStoredRun), plus one "@<topic>/<partition>" marker per
// source partition; distinct-count tiles are sets `tb:{<entity key>}|<series>:<tile>`. The braces are a hash tag:
// one entity's keys share a Valkey Cluster slot, so each Lua call touches a single slot. A batch is
// auto-pipelined, a read is one pipeline: one round trip per node.
import type { Cluster, Redis } from 'iovalkey';
import type { FeatureReader, FeatureSet, ReadRequest, ReadResult } from '../features/compile.ts';
import type { TileBatch, TileWriter } from '../features/tile-batch.ts';

const APPLY = `
local marker = ARGV[1]
local batchEnd = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[1], marker) or '-1')
if last >= batchEnd then return 0 end
local ttl = tonumber(ARGV[3])
local pruneBefore = tonumber(ARGV[4])
local nIncr = tonumber(ARGV[5])
local nMax = tonumber(ARGV[6])
local i = 7
-- Segments of stored fields: prefix, first read tile, count, value (FeatureSet.forEachStoredSegment); each field
-- appears once per call. Read and written in chunks: one HMGET and one HSET per chunk, not a call per field.
-- Sums come first: fields past index 'sums' are maxima.
local fields, values, sums = {}, {}, 0
for s = 1, nIncr + nMax do
  local prefix, first, v = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 3])
  for r = first, first + tonumber(ARGV[i + 2]) - 1 do
    fields[#fields + 1] = prefix .. r
    values[#values + 1] = v
  end
  if s == nIncr then sums = #fields end
  i = i + 4
end
for c = 1, #fields, 1000 do
  local last = math.min(c + 999, #fields)
  local cur = redis.call('HMGET', KEYS[1], unpack(fields, c, last))
  local kv = {}
  for j = c, last do
    local old = tonumber(cur[j - c + 1])
    local v = values[j]
    if old then v = j > sums and math.max(old, v) or old + v end
    kv[#kv + 1] = fields[j]
    kv[#kv + 1] = string.format('%d', v)
  end
  redis.call('HSET', KEYS[1], unpack(kv))
end
for k = 2, #KEYS do
  local n = tonumber(ARGV[i])
  i = i + 1
  for j = i, i + n - 1, 5000 do
    redis.call('SADD', KEYS[k], unpack(ARGV, j, math.min(j + 4999, i + n - 1)))
  end
  redis.call('EXPIRE', KEYS[k], ttl)
  i = i + n
end
if pruneBefore > 0 then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    local sec, tile = string.match(f, '^%d+%.(%d+)%.%d+:(%-?%d+)$')
    if sec and tonumber(tile) * tonumber(sec) * 1000 < pruneBefore then redis.call('HDEL', KEYS[1], f) end
  end
end
redis.call('HSET', KEYS[1], marker, batchEnd)
redis.call('EXPIRE', KEYS[1], ttl)
return 1
`;

// The same fields of many entity hashes (one layout, many entities): one string per key, the values joined by
// "," ("" when absent). Sending the field list once and answering one string per entity keeps a ranking's tens of
// thousands of tile reads cheap to encode and parse.
const READ = `
local out = {}
for k = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[k], unpack(ARGV))
  for i = 1, #ARGV do
    if not v[i] then v[i] = '' end
  end
  out[k] = table.concat(v, ',')
end
return out
`;

const UNION_COUNT = `
if #KEYS == 0 then return 0 end
return #redis.call('SUNION', unpack(KEYS))
`;

type Client = (Redis | Cluster) & {
  tbApply(numKeys: number, ...args: (string | number)[]): Promise<number>;
  tbUnionCount(numKeys: number, ...keys: string[]): Promise<number>;
  tbRead(numKeys: number, ...args: string[]): Promise<string[]>;
};

/** One entity's stored tiles, as read for a served-vector overlay (see streams/served.ts). */
export interface RawTiles {
  key: string;
  fields: (readonly [string, number | null])[];
  sets: (readonly [string, string[]])[];
}

export interface ValkeyStoreOptions {
  /** The definitions: their layout decides the stored fields. */
  features: FeatureSet;
  /** Key prefix (the pipeline's namespace). */
  namespace?: string;
  /** Key TTL in seconds: entities idle this long disappear. At least the longest window plus allowed lateness. */
  ttlSeconds: number;
  /** Fields for read tiles starting this long before the newest event time written are deleted when pruned. */
  retentionMs: number;
  /** Prune an entity's stale fields on about one write in this many. */
  pruneEvery?: number;
}

export class ValkeyStore implements FeatureReader, TileWriter {
  private readonly client: Client;
  private writes = 0;
  private readonly prefix: string;

  constructor(
    client: Redis | Cluster,
    private readonly options: ValkeyStoreOptions,
  ) {
    client.defineCommand('tbApply', { lua: APPLY });
    client.defineCommand('tbUnionCount', { lua: UNION_COUNT });
    client.defineCommand('tbRead', { lua: READ });
    this.client = client as Client;
    this.prefix = `${options.namespace ?? ''}tb:`;
  }

  hashKey(entityKey: string): string {
    return `${this.prefix}{${entityKey}}`;
  }

  async applyBatch(batch: TileBatch, source: string, endOffset: number, newestEventTime = 0): Promise<void> {
    const every = this.options.pruneEvery ?? 64;
    const pruneBefore = newestEventTime > 0 ? newestEventTime - this.options.retentionMs : 0;
    const calls: Promise<number>[] = [];
    const { features } = this.options;
    for (const [key, u] of batch.entities) {
      const hk = this.hashKey(key);
      const runs: (string | number)[] = [];
      let nIncr = 0;
      features.forEachStoredSegment(key, u.incr, 'sum', (prefix, first, count, value) => {
        runs.push(prefix, first, count, value);
        nIncr++;
      });
      let nMax = 0;
      features.forEachStoredSegment(key, u.max, 'max', (prefix, first, count, value) => {
        runs.push(prefix, first, count, value);
        nMax++;
      });
      const keys = [hk];
      const args: (string | number)[] = [
        `@${source}`,
        endOffset,
        this.options.ttlSeconds,
        this.writes++ % every === 0 ? pruneBefore : 0,
        nIncr,
        nMax,
        ...runs,
      ];
      for (const [f, members] of u.sets) {
        keys.push(`${hk}|${f}`);
        args.push(members.size, ...members);
      }
      calls.push(this.client.tbApply(keys.length, ...keys, ...args));
    }
    await Promise.all(calls);
  }

  /** The stored fields behind read requests: numeric fields, and the members of each set field. */
  async readRaw(requests: readonly ReadRequest[]): Promise<RawTiles[]> {
    return Promise.all(
      requests.map(async (r) => {
        const hk = this.hashKey(r.key);
        const setFields = [...new Set(r.sets.flat())];
        const [values, members] = await Promise.all([
          r.fields.length ? this.client.hmget(hk, ...r.fields) : Promise.resolve([]),
          Promise.all(setFields.map((f) => this.client.smembers(`${hk}|${f}`))),
        ]);
        return {
          key: r.key,
          fields: r.fields.map((f, i) => [f, values[i] == null ? null : Number(values[i])] as const),
          sets: setFields.map((f, i) => [f, members[i] as string[]] as const),
        };
      }),
    );
  }

  /** Every read of a plan in one round trip (see `send`). */
  async read(requests: readonly ReadRequest[]): Promise<ReadResult[]> {
    // Requests of one plan share a group's field list: one call per list, or per entity on a Cluster, where the
    // keys of one call must share a slot.
    const byFields = new Map<readonly string[], number[]>();
    requests.forEach((r, i) => {
      if (r.fields.length === 0) return;
      const list = byFields.get(r.fields);
      if (list) list.push(i);
      else byFields.set(r.fields, [i]);
    });
    const calls: { indices: number[] }[] = [];
    const commands: (string | number)[][] = [];
    for (const [fields, indices] of byFields) {
      const chunks = this.client.isCluster ? indices.map((i) => [i]) : [indices];
      for (const chunk of chunks) {
        calls.push({ indices: chunk });
        commands.push([
          'tbRead',
          chunk.length,
          ...chunk.map((i) => this.hashKey((requests[i] as ReadRequest).key)),
          ...fields,
        ]);
      }
    }
    for (const r of requests) {
      const hk = this.hashKey(r.key);
      for (const fields of r.sets) commands.push(['tbUnionCount', fields.length, ...fields.map((f) => `${hk}|${f}`)]);
    }
    const replies = await this.send(commands);
    const values: (number | null)[][] = requests.map(() => []);
    calls.forEach((call, c) => {
      (replies[c] as string[]).forEach((packed, k) => {
        values[call.indices[k] as number] = packed.split(',').map((v) => (v === '' ? null : Number(v)));
      });
    });
    let i = calls.length;
    return requests.map((r, ri) => ({
      values: values[ri] as (number | null)[],
      setCounts: r.sets.map(() => replies[i++] as number),
    }));
  }

  /**
   * One explicit pipeline on a single node. A Cluster pipeline must stay within one node's slots, so there the
   * commands go out together and auto-pipelining (when enabled) groups them into one round trip per node.
   */
  private async send(commands: (string | number)[][]): Promise<unknown[]> {
    if (this.client.isCluster) {
      const client = this.client as unknown as Record<string, (...args: (string | number)[]) => Promise<unknown>>;
      return Promise.all(commands.map(([name, ...args]) => client[name as string]?.apply(this.client, args)));
    }
    const replies = (await this.client.pipeline(commands as string[][]).exec()) ?? [];
    return replies.map(([err, value]) => {
      if (err) throw err;
      return value;
    });
  }
}
