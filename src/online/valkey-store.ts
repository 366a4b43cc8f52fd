// The online store in Valkey, in the parts layout (parts.ts): one hash per entity, `tb:{<entity key>}`, with a field
// per source partition that writes it (its part, JSON) and that partition's marker "@<topic>/<partition>" (the last
// batch end applied from it). The stream holds the parts of its partitions in process and writes each touched one
// whole after a batch: one call per batch (on a Cluster, one per hash). A read is one call for every entity of a plan.
import { readFileSync } from 'node:fs';
import type { Cluster, Redis } from 'iovalkey';
import type { FeatureSet } from '../features/compile.ts';
import type { ReadRequest, ReadResult } from '../features/read-plan.ts';
import type { TileBatch } from '../features/tile-batch.ts';
import type { FeatureReader, PartReader, TileWriter } from './contract.ts';
import { emptyPart, type Part, PartLayout } from './parts.ts';
import { TrackedReadCache } from './read-cache.ts';

/** A script of lua/ (each says what it takes and does). */
const lua = (name: string) => readFileSync(new URL(`./lua/${name}.lua`, import.meta.url), 'utf8');

/** Hashes per script call: Valkey runs one script at a time, so no call holds it up long. */
const CALL_KEYS = 1000;

/** Parts held in process, over all source partitions, past which the least recently written are let go. */
const MAX_HELD_PARTS = 200_000;

type Client = (Redis | Cluster) & {
  tbLoadParts(numKeys: number, ...args: (string | number)[]): Promise<string>;
  tbWriteParts(numKeys: number, ...args: (string | number)[]): Promise<number>;
  tbReadParts(numKeys: number, ...keys: string[]): Promise<string>;
};

export interface ValkeyStoreOptions {
  /** The definitions: what each entity's series are. */
  features: FeatureSet;
  /** Key prefix (the pipeline's namespace). */
  namespace?: string;
  /** Key TTL in seconds: entities not written this long disappear. At least the longest window plus allowed lateness. */
  ttlSeconds: number;
  /** Tiles that no read from this long before the prune horizon (applyBatch's) can ask for are dropped on write. */
  retentionMs: number;
  /** Reads of these entities go through a tracked cache (see read-cache.ts). */
  cache?: { tracked: TrackedReadCache; entities: ReadonlySet<string> };
}

export class ValkeyStore implements FeatureReader, TileWriter, PartReader {
  private readonly client: Client;
  /** The read cache's (tracked) connection: what a cached read misses is read through it, the rest not. */
  private readonly cacheReader: Client | undefined;
  private readonly prefix: string;
  private readonly parts: PartLayout;
  /** Per source partition written from this process: its parts as last written, by entity key (see forget). */
  private readonly held = new Map<string, Map<string, Part>>();
  private heldCount = 0;

  constructor(
    client: Redis | Cluster,
    private readonly options: ValkeyStoreOptions,
  ) {
    const cacheReader = options.cache?.tracked.reader;
    for (const c of cacheReader ? [client, cacheReader] : [client]) {
      c.defineCommand('tbLoadParts', { lua: lua('load-parts') });
      c.defineCommand('tbWriteParts', { lua: lua('write-parts') });
      c.defineCommand('tbReadParts', { lua: lua('read-parts') });
    }
    this.cacheReader = cacheReader as Client | undefined;
    this.client = client as Client;
    this.prefix = `${options.namespace ?? ''}tb:`;
    this.parts = new PartLayout(options.features);
    options.cache?.tracked.bind(this.prefix);
  }

  /** The hash entity `entityKey` lives in (its markers tell which batches it holds). */
  entityHash(entityKey: string): string {
    return `${this.prefix}{${entityKey}}`;
  }

  forget(source: string): void {
    this.heldCount -= this.held.get(source)?.size ?? 0;
    this.held.delete(source);
  }

  async applyBatch(batch: TileBatch, source: string, endOffset: number, horizon = 0): Promise<void> {
    let held = this.held.get(source);
    if (!held) {
      held = new Map();
      this.held.set(source, held);
    }
    try {
      await this.write(batch, source, endOffset, horizon, held);
    } catch (err) {
      // Some parts may be written, others not, and those held were changed: read them all again next time.
      this.forget(source);
      throw err;
    }
  }

  private async write(
    batch: TileBatch,
    source: string,
    endOffset: number,
    horizon: number,
    held: Map<string, Part>,
  ): Promise<void> {
    const before = horizon > 0 ? horizon - this.options.retentionMs : 0;
    const missing: string[] = [];
    for (const key of batch.entities.keys()) if (!held.has(key)) missing.push(key);
    if (missing.length > 0) {
      const loaded = await this.calls(missing, (keys) => this.client.tbLoadParts(keys.length, ...keys, source));
      missing.forEach((key, i) => {
        held.set(key, (loaded[i] as Part | null) ?? emptyPart());
        this.heldCount++;
      });
    }
    const keys: string[] = [];
    const values: string[] = [];
    for (const [key, u] of batch.entities) {
      const part = held.get(key) as Part;
      // Most recently written last: the first ones are let go when too many are held.
      held.delete(key);
      held.set(key, part);
      if (part.o >= endOffset) continue; // already holds this batch (a replay after a crash)
      this.parts.apply(part, u);
      if (before > 0) this.parts.prune(key, part, before);
      part.o = endOffset;
      keys.push(this.entityHash(key));
      values.push(JSON.stringify(part));
    }
    const ttl = this.options.ttlSeconds;
    const calls: Promise<unknown>[] = [];
    const step = this.client.isCluster ? 1 : CALL_KEYS;
    for (let i = 0; i < keys.length; i += step)
      calls.push(
        this.client.tbWriteParts(
          Math.min(step, keys.length - i),
          ...keys.slice(i, i + step),
          source,
          endOffset,
          ttl,
          ...values.slice(i, i + step),
        ),
      );
    await Promise.all(calls);
    if (this.heldCount > MAX_HELD_PARTS) this.letGo(held);
  }

  /** Lets go of the least recently written parts, from this source first, down to three quarters of the bound. */
  private letGo(first: Map<string, Part>): void {
    for (const held of [first, ...this.held.values()])
      for (const key of held.keys()) {
        if (this.heldCount <= (MAX_HELD_PARTS * 3) / 4) return;
        held.delete(key);
        this.heldCount--;
      }
  }

  /** One script over many entities' hashes, in calls of a bounded size; the JSON answers in entity order. */
  private async calls(entities: readonly string[], call: (keys: string[]) => Promise<string>): Promise<unknown[]> {
    const step = this.client.isCluster ? 1 : CALL_KEYS;
    const replies: Promise<string>[] = [];
    for (let i = 0; i < entities.length; i += step)
      replies.push(call(entities.slice(i, i + step).map((k) => this.entityHash(k))));
    return (await Promise.all(replies)).flatMap((r) => JSON.parse(r) as unknown[]);
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
   * rest from their parts, read in one call (and one more through the cache's connection for what it missed).
   */
  async read(requests: readonly ReadRequest[]): Promise<ReadResult[]> {
    const out = new Array<ReadResult>(requests.length);
    const tracked = this.options.cache?.tracked.active ? this.options.cache.tracked : undefined;
    const direct: number[] = [];
    const missed: number[] = [];
    for (let i = 0; i < requests.length; i++) {
      const r = requests[i] as ReadRequest;
      if (!tracked || !this.cached(r)) {
        direct.push(i);
        continue;
      }
      const kept = tracked.get(r.key);
      if (kept === undefined) missed.push(i);
      else out[i] = kept.answers.get(r.fields) ?? TrackedReadCache.remember(kept, r, this.parts.answer(r, kept.parts));
    }
    // A missed entity already being read (by a concurrent ranking) is not read again: its read is awaited.
    const reading: number[] = [];
    const waits: Promise<void>[] = [];
    for (const i of missed) {
      const r = requests[i] as ReadRequest;
      const pending = this.reading.get(r.key);
      if (pending === undefined) reading.push(i);
      else
        waits.push(
          pending.then((parts) => {
            out[i] = this.parts.answer(r, parts);
          }),
        );
    }
    const got = new Map<number, Part[]>();
    const read =
      tracked && this.cacheReader
        ? this.readInto(this.cacheReader, requests, reading, (i, parts, ticket) => {
            got.set(i, parts);
            const r = requests[i] as ReadRequest;
            const kept = tracked.put(r.key, parts, ticket);
            const answer = this.parts.answer(r, parts);
            out[i] = kept ? TrackedReadCache.remember(kept, r, answer) : answer;
          })
        : undefined;
    if (read)
      for (const i of reading) {
        const key = (requests[i] as ReadRequest).key;
        const parts = read.then(() => got.get(i) ?? []);
        this.reading.set(key, parts);
        parts.then(
          () => this.reading.delete(key),
          () => this.reading.delete(key),
        );
      }
    await Promise.all([
      this.readInto(this.client, requests, direct, (i, parts) => {
        out[i] = this.parts.answer(requests[i] as ReadRequest, parts);
      }),
      read,
      ...waits,
    ]);
    return out;
  }

  /** Reads the parts of requests[i] for each i of `indices` through `client`, handing each to `each`. */
  private async readInto(
    client: Client,
    requests: readonly ReadRequest[],
    indices: readonly number[],
    each: (i: number, parts: Part[], ticket: number) => void,
  ): Promise<void> {
    if (indices.length === 0) return;
    const tracked = client === this.cacheReader ? this.options.cache?.tracked : undefined;
    const ticket = tracked?.ticket() ?? 0;
    try {
      const parts = await this.calls(
        indices.map((i) => (requests[i] as ReadRequest).key),
        (hashes) => client.tbReadParts(hashes.length, ...hashes),
      );
      for (let j = 0; j < indices.length; j++) each(indices[j] as number, parts[j] as Part[], ticket);
    } finally {
      tracked?.done();
    }
  }

  /** Every part of each entity, as stored (for a served-vector overlay). */
  async readParts(keys: readonly string[]): Promise<Part[][]> {
    const out = new Array<Part[]>(keys.length);
    const requests = keys.map((key) => ({ key, fields: [], sets: [] }));
    await this.readInto(this.client, requests, [...keys.keys()], (i, parts) => {
      out[i] = parts;
    });
    return out;
  }
}
