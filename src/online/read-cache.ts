// Server-assisted client-side caching of entities' parts (Valkey CLIENT TRACKING): what is read from an entity's hash
// (on a connection of the cache's own) is kept in process, and Valkey tells us (on another) when that hash changes,
// so what is kept is always what Valkey holds, give or take the invalidation's way over the network. Rankings share
// their candidates (ads, campaigns, placements: read by every request), and parts hold tiles, not totals, so a kept
// entity answers reads at any later time until it is written again.
import type { Redis } from 'iovalkey';
import type { Logger } from 'pino';
import type { FeatureSet } from '../features/compile.ts';
import type { ReadRequest, ReadResult } from '../features/read-plan.ts';
import type { Part } from './parts.ts';

/** Entities kept, past which the cache starts over: bounds memory, costs one miss each. */
const MAX_ENTITIES = 200_000;

/** Read layouts an entity keeps answers for (the plan's layouts change with the smallest tile). */
const MAX_ANSWERS = 4;

/** An entity's parts as read, and its answers so far, per read layout (the plan's shared field list). */
export interface KeptEntity {
  readonly parts: Part[];
  readonly answers: Map<readonly string[], ReadResult>;
}

export class TrackedReadCache {
  private readonly entities = new Map<string, KeptEntity>();
  /** Invalidations so far; and per hash, the count at its last one while reads were in flight. */
  private invalidations = 0;
  private readonly changed = new Map<string, number>();
  private reading = 0;
  /** Tracking is on for the reading connection with the current subscriber as its redirect. */
  private tracking = false;
  /** Bumped by every reset: tracking turned on before one does not count. */
  private epoch = 0;
  private subscriberId: string | undefined;
  readonly stats = { hits: 0, misses: 0, invalidations: 0, resets: 0 };

  private constructor(
    /** The connection cached reads go through: tracked, so Valkey says when what it read changes. */
    readonly reader: Redis,
    private readonly subscriber: Redis,
    private readonly log: Logger,
  ) {}

  /**
   * Caches what is read through `reader`, a connection of its own beside `client`: tracking is per connection,
   * and reads it does not keep (the user's fields) would be tracked too, costing Valkey ≈ 70 µs per ranking and an
   * invalidation per later write to each key. Never throws: until tracking is on (Valkey down at start, or either
   * connection reconnecting, which loses it) the cache is empty and bypassed.
   */
  static start(client: Redis, log: Logger): TrackedReadCache {
    const reader = client.duplicate();
    reader.on('error', (err: Error) => log.warn({ err: err.message }, 'valkey cached-read connection error'));
    // Subscribed anew by us on each connection (its id changes; a subscribed connection cannot ask for it).
    const subscriber = client.duplicate({
      enableOfflineQueue: true,
      maxRetriesPerRequest: null,
      autoResubscribe: false,
    });
    const cache = new TrackedReadCache(reader, subscriber, log);
    subscriber.on('error', (err: Error) => log.warn({ err: err.message }, 'valkey invalidation connection error'));
    // The payload is an array of changed keys, or null when the database was flushed.
    subscriber.on('messageBuffer', (_channel: Buffer, keys: Buffer[] | Buffer | null) => {
      if (keys === null) cache.invalidate(null);
      else for (const key of Array.isArray(keys) ? keys : [keys]) cache.invalidate(key.toString());
    });
    subscriber.on('ready', () => {
      cache.reset();
      cache.subscriberId = undefined;
      void cache.guard(async () => {
        const id = String(await subscriber.call('CLIENT', 'ID'));
        await subscriber.subscribe('__redis__:invalidate');
        cache.subscriberId = id;
        await cache.track();
      });
    });
    reader.on('ready', () => {
      cache.reset();
      void cache.guard(() => cache.track());
    });
    if (reader.status === 'ready') void cache.guard(() => cache.track());
    return cache;
  }

  /** Points the reader's tracking at the subscriber; the cache is used from then on (unless reset meanwhile). */
  private async track(): Promise<void> {
    if (this.subscriberId === undefined) return;
    const epoch = this.epoch;
    await this.reader.call('CLIENT', 'TRACKING', 'ON', 'REDIRECT', this.subscriberId);
    if (epoch === this.epoch) this.tracking = true;
  }

  private async guard(step: () => Promise<void>): Promise<void> {
    try {
      await step();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'valkey client tracking not on: reading without cache');
    }
  }

  private reset(): void {
    this.tracking = false;
    this.epoch++;
    this.clear();
    this.stats.resets++;
  }

  private clear(): void {
    for (const kept of this.entities.values()) letGo(kept.answers);
    this.entities.clear();
  }

  /** A changed hash (or, null, a flushed database): what is kept of it is stale. */
  private invalidate(hash: string | null): void {
    this.stats.invalidations++;
    this.invalidations++;
    if (hash === null) {
      this.clear();
      return;
    }
    const key = this.keyOf(hash);
    const kept = this.entities.get(key);
    if (kept !== undefined) {
      letGo(kept.answers);
      this.entities.delete(key);
    }
    if (this.reading > 0) this.changed.set(key, this.invalidations);
  }

  /** What entity a changed hash holds (the store's key scheme; see bind). */
  private keyOf: (hash: string) => string = (hash) => hash;

  /** Kept entities are named by their entity keys, which live in hashes `<prefix>{<entity key>}`. */
  bind(prefix: string): void {
    this.keyOf = (hash) => (hash.startsWith(prefix) ? hash.slice(prefix.length + 1, -1) : hash);
  }

  /** Whether reads go through the cache now (tracking on). */
  get active(): boolean {
    return this.tracking;
  }

  /** What is kept of entity `key` (tracking on), else undefined. */
  get(key: string): KeptEntity | undefined {
    const kept = this.entities.get(key);
    if (kept) this.stats.hits++;
    else this.stats.misses++;
    return kept;
  }

  /** Taken before a read is sent: put keeps its answers unless their hash changed since. */
  ticket(): number {
    this.reading++;
    return this.invalidations;
  }

  /** Keeps what a read sent at `ticket` found of entity `key`, unless invalidated since. */
  put(key: string, parts: Part[], ticket: number): KeptEntity | undefined {
    const stale = ticket !== this.invalidations && (this.changed.get(key) ?? -1) > ticket;
    if (!stale && this.tracking) {
      if (this.entities.size >= MAX_ENTITIES) this.clear();
      const before = this.entities.get(key);
      if (before !== undefined) letGo(before.answers);
      const kept = { parts, answers: new Map() };
      this.entities.set(key, kept);
      return kept;
    }
    return undefined;
  }

  /** Kept entity's answer to `r` (a read layout's, shared by every read of it), and remembers it. */
  remember(kept: KeptEntity, r: ReadRequest, answer: ReadResult): ReadResult {
    if (kept.answers.size >= MAX_ANSWERS) letGo(kept.answers);
    const shared: ReadResult = { values: answer.values, setCounts: answer.setCounts, shared: true, keptBy: this };
    kept.answers.set(r.fields, shared);
    r.answered = shared;
    return shared;
  }

  /** Ends a read begun with ticket(). */
  done(): void {
    if (--this.reading === 0) this.changed.clear();
  }

  close(): void {
    this.clear();
    this.reader.disconnect();
    this.subscriber.disconnect();
  }
}

/** Answers no longer kept: requests holding one (ReadRequest.answered) read again. */
function letGo(answers: Map<readonly string[], ReadResult>): void {
  for (const a of answers.values()) a.keptBy = undefined;
  answers.clear();
}

/**
 * The read cache as scoring uses it: for the entities rankings share (every group not keyed by the user), on a
 * single Valkey node (a Cluster would need tracking per node).
 */
export function sharedEntityCache(features: FeatureSet, client: Redis, log: Logger) {
  const entities = features.groups.map((g) => g.group.entity).filter((e) => !e.fields.includes('user_id'));
  return { tracked: TrackedReadCache.start(client, log), entities: new Set(entities.map((e) => e.name)) };
}
