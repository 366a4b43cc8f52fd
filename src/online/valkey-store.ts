// The online store in Valkey, in the online layout (StoredLayout.forEachStoredRun), placed by the group's layout:
// - 'totals' groups (candidates: ads, campaigns, placements, …): one hash per stored field, whose fields are entity
//   ids, `tb:<entity>|<series>.<block>:<read tile>` — e.g. `tb:ad|0.60.5:29160000` holds every ad's 5-minute
//   impression total as read in that minute. A ranking reads the same stored fields of ~100 candidates, so it asks
//   a few hashes for many ids (≈ 30 HMGETs for 100 candidates, not one per entity: ≈ 330), and a read tile's hash
//   is dropped whole once no window reads it.
// - 'tiles' and 'entity-totals' groups (users, user×category): one hash per entity, `tb:{<entity key>}`, fields
//   "<series>.<block>:<read tile>": a ranking reads one or a few dozen of them, each whole window from one hash.
// Every hash also holds one "@<topic>/<partition>" marker per source partition (the last batch applied from it).
// Distinct-count tiles are sets per entity, `tb:{<entity key>}|<series>:<tile>`. A batch is auto-pipelined, a read
// is one call: one round trip (on a Cluster, one call per hash, grouped per node).
import { readFileSync } from 'node:fs';
import type { Cluster, Redis } from 'iovalkey';
import type { FeatureSet } from '../features/compile.ts';
import type { ReadRequest, ReadResult } from '../features/read-plan.ts';
import type { TileBatch } from '../features/tile-batch.ts';
import { getOrCreate } from '../util/map.ts';
import type { FeatureReader, RawTiles, TileWriter } from './contract.ts';
import type { CachedLayout, TrackedReadCache } from './read-cache.ts';

/** A script of lua/ (each says what it takes and does). */
const lua = (name: string) => readFileSync(new URL(`./lua/${name}.lua`, import.meta.url), 'utf8');
const APPLY = lua('apply-entities');
const ADD_MEMBERS = lua('add-members');
const APPLY_TILES = lua('apply-field-hashes');
const READ = lua('read');
const UNION_COUNT = lua('union-count');

/**
 * Stored fields one entity-hash write call updates, about: many entities to a call (a call per entity was most of
 * a batch's commands), while Valkey, which runs one script at a time, is held up ≈ 0.5 ms at most by one.
 */
const WRITE_CALL_FIELDS = 500;

/** Arguments per read call, about (a group's own stay whole). */
const READ_CALL_ARGS = 4000;

/** A script argument; arrays are flattened by the client. */
type Arg = string | number | (string | number)[];

type Client = (Redis | Cluster) & {
  // Array arguments are flattened by the client: no spread of a batch's (unbounded) fields onto the stack.
  tbApply(numKeys: number, ...args: (string | number | (string | number)[])[]): Promise<number>;
  tbAddMembers(numKeys: number, ...args: (string | number | (string | number)[])[]): Promise<number>;
  tbApplyTiles(numKeys: number, ...args: (string | number | (string | number)[])[]): Promise<number>;
  tbUnionCount(numKeys: number, ...keys: string[]): Promise<number>;
  tbRead(numKeys: number, ...args: (string | number | (string | number)[])[]): Promise<string>;
};

export interface ValkeyStoreOptions {
  /** The definitions: their layout decides the stored fields. */
  features: FeatureSet;
  /** Key prefix (the pipeline's namespace). */
  namespace?: string;
  /** Key TTL in seconds: hashes and sets not written this long disappear. At least the longest window plus allowed lateness. */
  ttlSeconds: number;
  /** Read tiles starting this long before the prune horizon (applyBatch's) are deleted when pruned. */
  retentionMs: number;
  /** Prune on about one write in this many. */
  pruneEvery?: number;
  /** Reads of these entities' fields go through a tracked cache ('totals' groups only; see read-cache.ts). */
  cache?: { tracked: TrackedReadCache; entities: ReadonlySet<string> };
}

/**
 * Reads of the same names in several hashes, answered hash by hash, name by name. Field hashes ('totals'): a hash
 * per stored field, a name per entity id. Entity hashes ('tiles', 'entity-totals'): a hash per entity, a name per
 * stored field.
 */
interface ReadGroup {
  hashes: string[];
  names: string[];
  /** Per entity (request index) and per stored field (its index in the request's fields), in hash or name order. */
  requests: number[];
  fields: number[];
  byEntity: boolean;
  /** A cache miss: the answers go to this layout's column, unless it changed since (its version then). */
  cache?: { layout: CachedLayout; version: number };
}

export class ValkeyStore implements FeatureReader, TileWriter {
  private readonly client: Client;
  /** The read cache's (tracked) connection: what a cached read misses is read through it, the rest not. */
  private readonly cacheReader: Client | undefined;
  /** Entity-hash writes and batches so far: each prunes about once in pruneEvery. */
  private writes = 0;
  private batches = 0;
  private readonly prefix: string;
  /** Entities kept in one hash per entity (layouts other than field-hash totals). */
  private readonly byEntity: ReadonlySet<string>;

  constructor(
    client: Redis | Cluster,
    private readonly options: ValkeyStoreOptions,
  ) {
    const cacheReader = options.cache?.tracked.reader;
    for (const c of cacheReader ? [client, cacheReader] : [client]) {
      c.defineCommand('tbApply', { lua: APPLY });
      c.defineCommand('tbAddMembers', { lua: ADD_MEMBERS });
      c.defineCommand('tbApplyTiles', { lua: APPLY_TILES });
      c.defineCommand('tbUnionCount', { lua: UNION_COUNT });
      c.defineCommand('tbRead', { lua: READ });
    }
    this.cacheReader = cacheReader as Client | undefined;
    this.client = client as Client;
    this.prefix = `${options.namespace ?? ''}tb:`;
    this.byEntity = new Set(
      options.features.groups.filter((g) => g.group.online !== 'totals').map((g) => g.group.entity.name),
    );
  }

  private entityHash(entityKey: string): string {
    return `${this.prefix}{${entityKey}}`;
  }

  /** Where stored field `field` ("<series>.<block>:<read tile>") of entity `entityKey` lives: [hash, hash field]. */
  place(entityKey: string, field: string): [string, string] {
    const colon = entityKey.indexOf(':');
    const name = entityKey.slice(0, colon);
    if (this.byEntity.has(name)) return [this.entityHash(entityKey), field];
    const tile = field.lastIndexOf(':') + 1;
    return [`${this.prefix}{${name}|${field.slice(0, tile)}}${field.slice(tile)}`, entityKey.slice(colon + 1)];
  }

  /** The first hash an update of tile `field` ("<series>:<tile>") of `entityKey` writes to: its marker tells when. */
  writtenHash(entityKey: string, field: string): string {
    let hash = '';
    this.options.features.layout.forEachStoredRun(entityKey, field, (prefix, first) => {
      hash ||= this.place(entityKey, prefix + first)[0];
    });
    return hash;
  }

  /** The key of an entity's distinct-count tile set `field` ("<series>:<tile>"). */
  private setKey(entityKey: string, field: string): string {
    return `${this.entityHash(entityKey)}|${field}`;
  }

  async applyBatch(batch: TileBatch, source: string, endOffset: number, horizon = 0): Promise<void> {
    const { features, ttlSeconds, retentionMs } = this.options;
    const every = this.options.pruneEvery ?? 64;
    const marker = `@${source}`;
    const pruneBefore = horizon > 0 ? horizon - retentionMs : 0;
    // Per field-hash tag ("<entity>|<stored prefix>"): its entities' segments and the read tiles they span.
    const runs = new Map<string, { max: boolean; args: (string | number)[]; from: number; to: number }>();
    const calls: Promise<unknown>[] = [];
    const hashes = this.keyedCalls(calls, (keys, args) =>
      this.client.tbApply(keys.length, keys, marker, endOffset, ttlSeconds, args),
    );
    const sets = this.keyedCalls(calls, (keys, args) => this.client.tbAddMembers(keys.length, keys, ttlSeconds, args));
    for (const [key, u] of batch.entities) {
      const colon = key.indexOf(':');
      const name = key.slice(0, colon);
      if (this.byEntity.has(name)) {
        const names: string[] = [];
        const values: number[] = [];
        const add = (prefix: string, first: number, count: number, value: number) => {
          for (let r = first; r < first + count; r++) {
            names.push(prefix + r);
            values.push(value);
          }
        };
        features.layout.forEachStoredSegment(key, u.incr, 'add', add);
        const sums = names.length;
        features.layout.forEachStoredSegment(key, u.max, 'max', add);
        // An entity hash prunes its own old fields on about one write in `every`.
        const prune = this.writes++ % every === 0 ? pruneBefore : 0;
        if (names.length > 0) hashes.add(this.entityHash(key), names.length, prune, sums, names.length, names, values);
      } else {
        const id = key.slice(colon + 1);
        const add = (max: boolean) => (prefix: string, first: number, count: number, value: number) => {
          const run = getOrCreate(runs, `${name}|${prefix}`, () => ({ max, args: [], from: first, to: first }));
          run.args.push(id, first, count, value);
          run.from = Math.min(run.from, first);
          run.to = Math.max(run.to, first + count);
        };
        features.layout.forEachStoredSegment(key, u.incr, 'add', add(false));
        features.layout.forEachStoredSegment(key, u.max, 'max', add(true));
      }
      for (const [f, members] of u.sets) sets.add(this.setKey(key, f), members.size, members.size, [...members]);
    }
    hashes.flush();
    sets.flush();
    for (const [tag, run] of runs) {
      const keys: string[] = [];
      for (let r = run.from; r < run.to; r++) keys.push(`${this.prefix}{${tag}}${r}`);
      calls.push(
        this.client.tbApplyTiles(
          keys.length,
          ...keys,
          marker,
          endOffset,
          ttlSeconds,
          run.max ? 1 : 0,
          run.from,
          run.args,
        ),
      );
    }
    if (pruneBefore > 0 && this.batches++ % every === 0) calls.push(this.prune(pruneBefore));
    await Promise.all(calls);
  }

  /**
   * Deletes the field hashes of read tiles starting before `before`: per 'totals' prefix, from where the last prune
   * stopped (kept in Valkey, `tb:@pruned`: bookkeeping, like the batch markers) up to there. The first prune of a namespace only records where it is (older hashes,
   * if any, expire by their TTL).
   */
  private async prune(before: number): Promise<void> {
    const stored = this.options.features.layout.stored.filter((s) => s.online === 'totals');
    if (stored.length === 0) return; // no field hashes (HMGET of no names is an error)
    const marks = `${this.prefix}@pruned`;
    const names = stored.map((s) => `${s.entity}|${s.prefix}`);
    const done = await this.client.hmget(marks, ...names);
    const deletes: Promise<unknown>[] = [];
    const next: (string | number)[] = [];
    stored.forEach((s, i) => {
      const to = Math.ceil(before / s.tileMs);
      const from = done[i] == null ? to : Number(done[i]);
      if (from < to) {
        const keys: string[] = [];
        for (let r = from; r < to; r++) keys.push(`${this.prefix}{${names[i]}}${r}`);
        // One call per hash on a Cluster (each its own slot), one per prefix otherwise.
        if (this.client.isCluster) for (const k of keys) deletes.push(this.client.unlink(k));
        else deletes.push(this.client.unlink(...keys));
      }
      if (from < to || done[i] == null) next.push(names[i] as string, to);
    });
    await Promise.all(deletes);
    if (next.length > 0) await this.client.hset(marks, ...next);
  }

  /**
   * Calls of one script over many keys, each key's arguments in turn, of about WRITE_CALL_FIELDS stored fields each
   * (a call per key on a Cluster, where one call's keys must share a slot).
   */
  private keyedCalls(calls: Promise<unknown>[], send: (keys: string[], args: (string | number)[]) => Promise<unknown>) {
    let keys: string[] = [];
    // Flat: the client flattens one level of array arguments only.
    let args: (string | number)[] = [];
    let fields = 0;
    const flush = () => {
      if (keys.length > 0) calls.push(send(keys, args));
      [keys, args, fields] = [[], [], 0];
    };
    return {
      add: (key: string, size: number, ...more: Arg[]) => {
        keys.push(key);
        for (const a of more)
          if (Array.isArray(a)) for (const x of a) args.push(x);
          else args.push(a);
        fields += size;
        if (this.client.isCluster || fields >= WRITE_CALL_FIELDS) flush();
      },
      flush,
    };
  }

  /** The stored fields behind read requests: numeric fields, and the members of each set field. */
  async readRaw(requests: readonly ReadRequest[]): Promise<RawTiles[]> {
    const groups = requests.map((r, i) => this.readGroup(r.fields, [i], requests));
    const [values, members] = await Promise.all([
      this.send(groups),
      Promise.all(
        requests.map((r) =>
          Promise.all(
            [...new Set(r.sets.flat())].map(
              async (f) => [f, await this.client.smembers(this.setKey(r.key, f))] as const,
            ),
          ),
        ),
      ),
    ]);
    const valuesOf = requests.map((r) => new Array<number | null>(r.fields.length));
    this.fill(groups, values, valuesOf);
    return requests.map((r, i) => ({
      key: r.key,
      fields: r.fields.map((f, j) => [f, (valuesOf[i] as (number | null)[])[j] as number | null] as const),
      sets: members[i] as RawTiles['sets'],
    }));
  }

  /** Every read of a plan in one round trip (none for what the read cache holds). */
  async read(requests: readonly ReadRequest[]): Promise<ReadResult[]> {
    // Requests of one plan share a group's field list.
    const byFields = new Map<readonly string[], number[]>();
    requests.forEach((r, i) => {
      if (r.fields.length === 0) return;
      const list = byFields.get(r.fields);
      if (list) list.push(i);
      else byFields.set(r.fields, [i]);
    });
    // Answered whole by the read cache, or read (wholly or in part) into valuesOf.
    const results: ReadResult[] = new Array(requests.length);
    const valuesOf: (number | null)[][] = new Array(requests.length);
    const valuesFor = (i: number, n: number) => {
      const v = new Array<number | null>(n);
      valuesOf[i] = v;
      return v;
    };
    const cache = this.options.cache;
    const groups: ReadGroup[] = [];
    for (const [fields, indices] of byFields) {
      const key = (requests[indices[0] as number] as ReadRequest).key;
      const entity = key.slice(0, key.indexOf(':'));
      const layout =
        cache?.entities.has(entity) && !this.byEntity.has(entity)
          ? cache.tracked.layout(fields, () => fields.map((f) => this.place(key, f)[0]))
          : undefined;
      if (!layout) {
        for (const i of indices) valuesFor(i, fields.length);
        groups.push(this.readGroup(fields, indices, requests));
        continue;
      }
      // Per column, the entities whose cached value is missing or stale.
      let misses: number[][] | undefined;
      for (const i of indices) {
        const r = requests[i] as ReadRequest;
        const whole = r.sets.length === 0 ? cache?.tracked.whole(layout, r.key) : undefined;
        if (whole) {
          results[i] = whole;
          continue;
        }
        misses ??= fields.map(() => []);
        cache?.tracked.lookup(layout, r.key, valuesFor(i, fields.length), misses, i);
      }
      misses?.forEach((missing, f) => {
        if (missing.length === 0) return;
        const g = this.readGroup([fields[f] as string], missing, requests, [f]);
        g.cache = { layout, version: layout.versions[f] as number };
        groups.push(g);
      });
    }
    const unions: Promise<number>[] = [];
    for (const r of requests)
      for (const fields of r.sets)
        unions.push(this.client.tbUnionCount(fields.length, ...fields.map((f) => this.setKey(r.key, f))));
    const [values, counts] = await Promise.all([this.send(groups), Promise.all(unions)]);
    this.fill(groups, values, valuesOf, (g, i, f, v) => {
      if (g.cache) cache?.tracked.store(g.cache.layout, f, g.cache.version, (requests[i] as ReadRequest).key, v);
    });
    let u = 0;
    for (let i = 0; i < requests.length; i++) {
      const sets = (requests[i] as ReadRequest).sets;
      if (results[i]) continue;
      const values = valuesOf[i] ?? [];
      const setCounts = new Array<number>(sets.length);
      for (let s = 0; s < sets.length; s++) setCounts[s] = counts[u++] as number;
      results[i] = { values, setCounts };
    }
    return results;
  }

  /**
   * Reads of `fields` for the entities of `indices` (requests of one group), by where the group lives; `columns`:
   * where each field goes in the requests' values (all of them, in order, unless given).
   */
  private readGroup(
    fields: readonly string[],
    indices: number[],
    requests: readonly ReadRequest[],
    columns = fields.map((_, f) => f),
  ): ReadGroup {
    const keys = indices.map((i) => (requests[i] as ReadRequest).key);
    const first = keys[0] as string;
    if (this.byEntity.has(first.slice(0, first.indexOf(':'))))
      return {
        hashes: keys.map((k) => this.entityHash(k)),
        names: [...fields],
        requests: indices,
        fields: columns,
        byEntity: true,
      };
    return {
      hashes: fields.map((f) => this.place(first, f)[0]),
      names: keys.map((k) => k.slice(k.indexOf(':') + 1)),
      requests: indices,
      fields: columns,
      byEntity: false,
    };
  }

  /** Puts answers (hash by hash, name by name) into each request's values; `each` sees every one. */
  private fill(
    groups: readonly ReadGroup[],
    values: readonly (number | null)[],
    valuesOf: (number | null)[][],
    each?: (g: ReadGroup, request: number, field: number, v: number | null) => void,
  ): void {
    let at = 0;
    for (const g of groups)
      for (let h = 0; h < g.hashes.length; h++)
        for (let n = 0; n < g.names.length; n++) {
          const v = values[at++] as number | null;
          const i = (g.byEntity ? g.requests[h] : g.requests[n]) as number;
          const f = (g.byEntity ? g.fields[n] : g.fields[h]) as number;
          (valuesOf[i] as (number | null)[])[f] = v;
          each?.(g, i, f, v);
        }
  }

  /**
   * The values of groups of reads, group by group, hash by hash and name by name: one call (on a Cluster, one per
   * hash), and one more through the read cache's connection for what it missed.
   */
  private async send(all: readonly ReadGroup[]): Promise<(number | null)[]> {
    const cacheReader = this.cacheReader;
    if (!cacheReader || !all.some((g) => g.cache)) return this.call(this.client, all);
    const missed = all.filter((g) => g.cache);
    const rest = all.filter((g) => !g.cache);
    const [cached, direct] = await Promise.all([this.call(cacheReader, missed), this.call(this.client, rest)]);
    // Back in the groups' order.
    const out: (number | null)[] = [];
    let c = 0;
    let d = 0;
    for (const g of all)
      for (let n = g.hashes.length * g.names.length; n > 0; n--)
        out.push((g.cache ? cached[c++] : direct[d++]) as number | null);
    return out;
  }

  private async call(client: Client, all: readonly ReadGroup[]): Promise<(number | null)[]> {
    const groups = all.filter((g) => g.hashes.length > 0 && g.names.length > 0);
    if (groups.length === 0) return [];
    const calls: Promise<string>[] = [];
    if (client.isCluster) {
      for (const g of groups) for (const h of g.hashes) calls.push(client.tbRead(1, h, 1, 1, g.names.length, g.names));
    } else {
      // Groups in calls of a bounded size (a served-vector load reads thousands of entities at once).
      let hashes: string[] = [];
      let args: (string | number)[] = [];
      let n = 0;
      const flush = () => {
        if (n > 0) calls.push(client.tbRead(hashes.length, hashes, n, args));
        [hashes, args, n] = [[], [], 0];
      };
      for (const g of groups) {
        if (hashes.length + args.length > READ_CALL_ARGS) flush();
        hashes.push(...g.hashes);
        args.push(g.hashes.length, g.names.length, ...g.names);
        n++;
      }
      flush();
    }
    const out: (number | null)[] = [];
    // Every call answers at least one value: "" is one absent value.
    for (const packed of await Promise.all(calls)) {
      for (const v of packed.split(',')) out.push(v === '' ? null : Number(v));
    }
    return out;
  }
}
