// The online store in Valkey, in the parts layout (parts.ts): one hash per entity, `tb:{<entity key>}`, with a field
// per source partition that writes it (its part, JSON) and that partition's marker "@<topic>/<partition>" (the last
// batch end applied from it). The stream's state (part-writer.ts) loads a part on an entity's first touch and writes
// each touched one whole after a batch: one call per batch. A read is one call for every entity of a plan. On a
// Cluster, one call per master: the scripts' cross-slot variants run on the master holding every hash they are
// given (Valkey lets a script flagged allow-cross-slot-keys touch any slot its node serves); where that fails (a slot
// moving, a failover) the hashes go one per call through the Cluster client, which follows the redirections.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import calculateSlot from 'cluster-key-slot';
import type { Cluster, Redis } from 'iovalkey';
import type { FeatureSet } from '../features/compile.ts';
import type { ReadRequest, ReadResult } from '../features/read-plan.ts';
import type { FeatureReader, PartReader, TileWriter } from './contract.ts';
import { type AdmittedEvents, type PartStore, PartWriter } from './part-writer.ts';
import { type Part, PartLayout } from './parts.ts';
import type { TrackedReadCache } from './read-cache.ts';

/** A script of lua/ (each says what it takes and does). */
const lua = (name: string) => readFileSync(new URL(`./lua/${name}.lua`, import.meta.url), 'utf8');

/** A script as sent to one master of a Cluster: its hashes passed after their count in ARGV, not as KEYS. */
interface NodeScript {
  source: string;
  sha: string;
}

function crossSlot(name: string): NodeScript {
  const source = `#!lua flags=allow-cross-slot-keys
local n = tonumber(ARGV[1])
local KEYS, ARGV = { unpack(ARGV, 2, n + 1) }, { unpack(ARGV, n + 2) }
${lua(name)}`;
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

const NODE_SCRIPTS = {
  tbLoadParts: crossSlot('load-parts'),
  tbWriteParts: crossSlot('write-parts'),
  tbReadParts: crossSlot('read-parts'),
};
type ScriptName = keyof typeof NODE_SCRIPTS;

/** Hashes per script call: Valkey runs one script at a time, so no call holds it up long. */
const CALL_KEYS = 1000;

/** How long a batch's write waits for a master's replicas to have it, at most. */
const REPLICA_WAIT_MS = 2_000;

/** Hashes whose TTL this process remembers setting, at most (then it sets them again). */
const MAX_EXPIRE_SET = 400_000;

type Client = (Redis | Cluster) & {
  tbLoadParts(numKeys: number, ...args: (string | number)[]): Promise<string>;
  tbWriteParts(numKeys: number, ...args: (string | number)[]): Promise<number>;
  tbReadParts(numKeys: number, ...args: (string | number)[]): Promise<string>;
};

export interface ValkeyStoreOptions {
  /** The definitions: what each entity's series are. */
  features: FeatureSet;
  /** Key prefix (the pipeline's namespace). */
  namespace?: string;
  /**
   * Key TTL in seconds: an entity not written this long disappears (a writer gives it again at most every quarter
   * TTL, so between ¾ TTL and TTL after its last write). At least the longest window plus allowed lateness.
   */
  ttlSeconds: number;
  /** Tiles that no read from this long before the prune horizon (applyBatch's) can ask for are dropped on write. */
  retentionMs: number;
  /** Reads of these entities go through a tracked cache (see read-cache.ts). */
  cache?: { tracked: TrackedReadCache; entities: ReadonlySet<string> };
  /** Entities held in process (over all source partitions) past which a partition's state is read again. */
  heldEntities?: number;
}

export class ValkeyStore implements FeatureReader, TileWriter, PartReader, PartStore {
  private readonly client: Client;
  private readonly prefix: string;
  private readonly parts: PartLayout;
  private readonly writer: PartWriter;
  /** On a Cluster, hashes sent one per call because their master's call failed or their slot's master was unknown. */
  perHashCalls = 0;
  /** When (epoch ms) this process last set each hash's TTL. */
  private readonly expireSet = new Map<string, number>();

  constructor(
    client: Redis | Cluster,
    private readonly options: ValkeyStoreOptions,
  ) {
    client.defineCommand('tbLoadParts', { lua: lua('load-parts') });
    client.defineCommand('tbWriteParts', { lua: lua('write-parts') });
    client.defineCommand('tbReadParts', { lua: lua('read-parts') });
    // A Cluster client's automatic pipelines are routed by a command's first argument, which for a script is its
    // key count, not a key: scripts go on their own, each to its key's node.
    const ignored = client.isCluster ? client.options.autoPipeliningIgnoredCommands : undefined;
    if (ignored && !ignored.includes('tbLoadParts')) ignored.push('tbLoadParts', 'tbWriteParts', 'tbReadParts');
    this.client = client as Client;
    this.prefix = `${options.namespace ?? ''}tb:`;
    this.parts = new PartLayout(options.features);
    this.writer = new PartWriter(options.features, this, options.heldEntities);
    options.cache?.tracked.bind(this.prefix);
  }

  /** The hash entity `entityKey` lives in (its markers tell which batches it holds). */
  entityHash(entityKey: string): string {
    return `${this.prefix}{${entityKey}}`;
  }

  forget(source: string): void {
    this.writer.forget(source);
  }

  applyBatch(batch: AdmittedEvents, source: string, endOffset: number, horizon = 0): Promise<void> {
    return this.writer.apply(batch, source, endOffset, horizon > 0 ? horizon - this.options.retentionMs : 0);
  }

  async loadParts(keys: readonly string[], source: string): Promise<(Part | null)[]> {
    return (await this.answers('tbLoadParts', keys, () => [source])) as (Part | null)[];
  }

  async writeParts(keys: readonly string[], parts: readonly string[], source: string, endOffset: number) {
    // Hashes whose TTL this process set more than a quarter TTL ago (or never) go first, with their count: only
    // they are given it again (a hash lives at least ¾ TTL past its last write).
    const expire = { keys: [] as string[], values: [] as string[] };
    const keep = { keys: [] as string[], values: [] as string[] };
    const clock = Date.now();
    const ttlMs = this.options.ttlSeconds * 1000;
    if (this.expireSet.size > MAX_EXPIRE_SET) this.expireSet.clear();
    for (let i = 0; i < keys.length; i++) {
      const hash = this.entityHash(keys[i] as string);
      const set = this.expireSet.get(hash);
      const to = set === undefined || clock - set > ttlMs / 4 ? expire : keep;
      if (to === expire) this.expireSet.set(hash, clock);
      to.keys.push(hash);
      to.values.push(parts[i] as string);
    }
    const expiring = expire.keys.length;
    const hashes = expire.keys.concat(keep.keys);
    const values = expire.values.concat(keep.values);
    const ttl = this.options.ttlSeconds;
    // Each call's share of the hashes keeps their order: those to be given the TTL first, and their count.
    await this.calls('tbWriteParts', hashes, (slice) => [
      source,
      endOffset,
      ttl,
      slice.filter((i) => i < expiring).length,
      ...slice.map((i) => values[i] as string),
    ]);
    if (this.client.isCluster) await this.replicated(this.client as Cluster);
  }

  /**
   * Waits (a bounded while) until every master's replicas have this client's writes: a master that fails over then
   * hands its replica the parts it acknowledged, before the stream's checkpoint says the batch is done. Valkey
   * replicates asynchronously; without this a failover could drop a batch the checkpoint counts as written.
   */
  private async replicated(cluster: Cluster): Promise<void> {
    const replicas = new Map<string, number>();
    for (const [master, ...others] of cluster.slots) if (master) replicas.set(master, others.length);
    await Promise.all(
      cluster.nodes('master').map((node) => {
        const n = replicas.get(`${node.options.host}:${node.options.port}`) ?? 0;
        return n > 0 ? node.call('WAIT', n, REPLICA_WAIT_MS) : undefined;
      }),
    );
  }

  /**
   * Runs a script over `hashes` in calls of at most CALL_KEYS, each given its share (indexes into `hashes`, in order)
   * and the arguments `args` makes of it; answers each call's share and reply. On a Cluster, calls go to the master
   * holding their hashes (by the client's slot map); a call that fails there is made again per hash through the
   * Cluster client (the scripts are idempotent: a write never replaces a part with an earlier one).
   */
  private async calls(
    script: ScriptName,
    hashes: readonly string[],
    args: (slice: number[]) => (string | number)[],
  ): Promise<{ slice: number[]; reply: unknown }[]> {
    const out: { slice: number[]; reply: unknown }[] = [];
    const perCall = (slice: number[], call: () => Promise<unknown>) =>
      call().then((reply) => {
        out.push({ slice, reply });
      });
    const onClient = (slice: number[]) =>
      perCall(
        slice,
        () =>
          this.client[script](
            slice.length,
            ...slice.map((i) => hashes[i] as string),
            ...args(slice),
          ) as Promise<unknown>,
      );
    if (!this.client.isCluster) {
      const calls: Promise<void>[] = [];
      for (let from = 0; from < hashes.length; from += CALL_KEYS) {
        const slice = Array.from({ length: Math.min(hashes.length, from + CALL_KEYS) - from }, (_, j) => from + j);
        calls.push(onClient(slice));
      }
      await Promise.all(calls);
      return out;
    }
    const cluster = this.client as Cluster;
    const masters = new Map(cluster.nodes('master').map((n) => [`${n.options.host}:${n.options.port}`, n]));
    const byNode = new Map<Redis | undefined, number[]>();
    for (let i = 0; i < hashes.length; i++) {
      const node = masters.get(cluster.slots[calculateSlot(hashes[i] as string)]?.[0] ?? '');
      const slice = byNode.get(node) ?? [];
      byNode.set(node, slice);
      slice.push(i);
    }
    const calls: Promise<void>[] = [];
    for (const [node, all] of byNode)
      for (let from = 0; from < all.length; from += CALL_KEYS) {
        const slice = all.slice(from, from + CALL_KEYS);
        const one = (i: number) => onClient([i]);
        const each = () => {
          this.perHashCalls += slice.length;
          return Promise.all(slice.map(one)).then(() => {});
        };
        if (node === undefined) calls.push(each());
        else
          calls.push(
            perCall(slice, () =>
              onNode(
                node,
                script,
                slice.map((i) => hashes[i] as string),
                args(slice),
              ),
            ).catch(each),
          );
      }
    await Promise.all(calls);
    return out;
  }

  /** A script over entities' hashes, answering a JSON array per call: the answers in entity order. */
  private async answers(
    script: ScriptName,
    entities: readonly string[],
    args: (slice: number[]) => (string | number)[] = () => [],
  ): Promise<unknown[]> {
    const all = new Array<unknown>(entities.length);
    const replies = await this.calls(
      script,
      entities.map((k) => this.entityHash(k)),
      args,
    );
    for (const { slice, reply } of replies) {
      const got = JSON.parse(reply as string) as unknown[];
      slice.forEach((i, j) => {
        all[i] = got[j];
      });
    }
    return all;
  }

  /** Every part of each entity. */
  private fetch(keys: readonly string[]): Promise<Part[][]> {
    return this.answers('tbReadParts', keys) as Promise<Part[][]>;
  }

  /** Cached entities being read now, by entity key: a concurrent read of one waits for it. */
  private readonly reading = new Map<string, Promise<Part[]>>();

  /** Whether the read cache keeps the entities of this read layout (a group's: requests share its field list). */
  private readonly cachedLayouts = new Map<readonly string[], boolean>();

  private cached(r: ReadRequest): boolean {
    let yes = this.cachedLayouts.get(r.fields);
    if (yes === undefined) {
      if (this.cachedLayouts.size >= 1000) this.cachedLayouts.clear();
      yes = this.options.cache?.entities.has(r.key.slice(0, r.key.indexOf(':'))) ?? false;
      this.cachedLayouts.set(r.fields, yes);
    }
    return yes;
  }

  /**
   * Every read's answer: from the read cache for the entities it keeps (answers made once per read layout), the
   * rest (and what the cache missed) from their parts, read in one call.
   */
  async read(requests: readonly ReadRequest[]): Promise<ReadResult[]> {
    const out = new Array<ReadResult>(requests.length);
    const tracked = this.options.cache?.tracked.active ? this.options.cache.tracked : undefined;
    const direct: number[] = [];
    const missed: number[] = [];
    for (let i = 0; i < requests.length; i++) {
      const r = requests[i] as ReadRequest;
      // The common case: this request's answer last time, still kept (no lookup).
      const again = r.answered;
      if (tracked !== undefined && again?.keptBy === tracked) {
        tracked.stats.hits++;
        out[i] = again;
        continue;
      }
      if (!tracked || !this.cached(r)) {
        direct.push(i);
        continue;
      }
      const kept = tracked.get(r.key);
      if (kept === undefined) missed.push(i);
      else {
        const shared = kept.answers.get(r.fields);
        if (shared !== undefined) r.answered = shared;
        out[i] = shared ?? tracked.remember(kept, r, this.parts.answer(r, kept.parts));
      }
    }
    const answer = (i: number, parts: Part[]) => {
      out[i] = this.parts.answer(requests[i] as ReadRequest, parts);
    };
    const keyOf = (i: number) => (requests[i] as ReadRequest).key;
    const reads: Promise<unknown>[] = [];
    if (direct.length > 0)
      reads.push(
        this.fetch(direct.map(keyOf)).then((all) => {
          all.forEach((p, j) => {
            answer(direct[j] as number, p);
          });
        }),
      );
    // A missed entity already being read (by a concurrent ranking) is not read again: its read is awaited.
    const reading: number[] = [];
    for (const i of missed) {
      const pending = this.reading.get(keyOf(i));
      if (pending === undefined) reading.push(i);
      else reads.push(pending.then((parts) => answer(i, parts)));
    }
    if (tracked && reading.length > 0) {
      const keys = reading.map(keyOf);
      // Taken before the read is sent; kept open until its answers are put.
      const ticket = tracked.ticket();
      const fetched = this.fetch(keys);
      keys.forEach((key, j) => {
        const parts = fetched.then((all) => all[j] as Part[]);
        this.reading.set(key, parts);
        const settled = () => this.reading.delete(key);
        parts.then(settled, settled);
      });
      reads.push(
        fetched
          .then((all) =>
            reading.forEach((i, j) => {
              const parts = all[j] as Part[];
              const r = requests[i] as ReadRequest;
              const kept = tracked.put(r.key, parts, ticket);
              const got = this.parts.answer(r, parts);
              out[i] = kept ? tracked.remember(kept, r, got) : got;
            }),
          )
          .finally(() => tracked.done()),
      );
    }
    await Promise.all(reads);
    return out;
  }

  /** Every part of each entity, as stored (for a served-vector overlay). */
  readParts(keys: readonly string[]): Promise<Part[][]> {
    return this.fetch(keys);
  }
}

/** Runs a script's cross-slot variant on one master (loading it there if it is not yet). */
async function onNode(node: Redis, script: ScriptName, hashes: string[], args: (string | number)[]): Promise<unknown> {
  const { sha, source } = NODE_SCRIPTS[script];
  try {
    return await node.evalsha(sha, 0, hashes.length, ...hashes, ...args);
  } catch (err) {
    if (!(err as Error).message.startsWith('NOSCRIPT')) throw err;
    return node.eval(source, 0, hashes.length, ...hashes, ...args);
  }
}
