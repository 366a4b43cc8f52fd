// Server-assisted client-side caching of entities' parts (Valkey CLIENT TRACKING in broadcast mode): what is read
// from the hashes of the cached entities is kept in process, and every node holding them tells us (on a connection of
// ours per node) when any hash under their prefixes changes, so what is kept is always what Valkey holds, give or
// take the invalidation's way over the network. Broadcast tracking follows keys, not reads: reads go through any
// connection, and on a Cluster each master's connection covers whatever slots it holds now. Rankings share their
// candidates (ads, campaigns, placements: read by every request), and parts hold tiles, not totals, so a kept entity
// answers reads at any later time until it is written again.
import { type Cluster, type Redis, Valkey } from 'iovalkey';
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

/** One node's invalidations: a connection that tracks the cached prefixes for itself and is subscribed to them. */
interface NodeTracker {
  readonly connection: Redis;
  on: boolean;
}

export class TrackedReadCache {
  private readonly entities = new Map<string, KeptEntity>();
  /** Invalidations so far; and per hash, the count at its last one while reads were in flight. */
  private invalidations = 0;
  private readonly changed = new Map<string, number>();
  /** The invalidation count at the last reset: a read ticketed before it is not kept. */
  private resetAt = 0;
  private reading = 0;
  /** Per node ("host:port") holding the data now, its tracker. */
  private readonly trackers = new Map<string, NodeTracker>();
  private prefixes: string[] | undefined;
  private closed = false;
  private readonly timer: NodeJS.Timeout;
  readonly stats = { hits: 0, misses: 0, invalidations: 0, resets: 0 };

  /**
   * Caches reads of `entities` (names) through `client`, a single node or a Cluster: tracking starts once bind()
   * gives the key prefix. Never throws: while any node's tracking is off (Valkey down at start, a tracker
   * reconnecting, a master not tracked yet after a failover) the cache is empty and bypassed.
   */
  constructor(
    private readonly client: Redis | Cluster,
    private readonly cachedEntities: readonly string[],
    private readonly log: Logger,
  ) {
    if (client.isCluster) {
      const cluster = client as Cluster;
      for (const event of ['refresh', '+node', '-node', 'ready']) cluster.on(event, () => this.follow());
    }
    // Masters can change without an event this process sees first (a failover before any command reached it).
    this.timer = setInterval(() => this.follow(), 1_000);
    this.timer.unref();
  }

  /** Kept entities are named by their entity keys, which live in hashes `<prefix>{<entity key>}`. */
  bind(prefix: string): void {
    this.keyOf = (hash) => (hash.startsWith(prefix) ? hash.slice(prefix.length + 1, -1) : hash);
    this.prefixes = [...new Set(this.cachedEntities)].map((name) => `${prefix}{${name}:`);
    this.follow();
  }

  /** The nodes whose writes the cache must hear of: a single node, or a Cluster's masters now. */
  private nodes(): Map<string, () => Redis> {
    const out = new Map<string, () => Redis>();
    if (!this.client.isCluster) {
      const single = this.client as Redis;
      out.set('single', () => single.duplicate(TRACKER_OPTIONS));
      return out;
    }
    const cluster = this.client as Cluster;
    for (const node of cluster.nodes('master')) {
      const { host, port, username, password } = node.options;
      out.set(`${host}:${port}`, () => new Valkey({ host, port, username, password, ...TRACKER_OPTIONS }));
    }
    return out;
  }

  /** Trackers for exactly the nodes holding the data now; any change starts the cache over. */
  private follow(): void {
    if (this.closed || this.prefixes === undefined) return;
    const nodes = this.nodes();
    let changed = false;
    for (const [key, tracker] of this.trackers) {
      if (nodes.has(key)) continue;
      tracker.connection.disconnect();
      this.trackers.delete(key);
      changed = true;
    }
    for (const [key, open] of nodes) {
      if (this.trackers.has(key)) continue;
      this.trackers.set(key, this.track(open()));
      changed = true;
    }
    if (changed) this.reset();
  }

  /** A node's tracker: on each (re)connection, tracking for itself in broadcast mode, then subscribed. */
  private track(connection: Redis): NodeTracker {
    const tracker: NodeTracker = { connection, on: false };
    connection.on('error', (err: Error) => this.log.warn({ err: err.message }, 'valkey invalidation connection error'));
    // The payload is an array of changed keys, or null when the database was flushed.
    connection.on('messageBuffer', (_channel: Buffer, keys: Buffer[] | Buffer | null) => {
      if (keys === null) this.invalidate(null);
      else for (const key of Array.isArray(keys) ? keys : [keys]) this.invalidate(key.toString());
    });
    connection.on('close', () => {
      if (tracker.on) this.reset();
      tracker.on = false;
    });
    connection.on('ready', async () => {
      this.reset();
      try {
        const id = String(await connection.call('CLIENT', 'ID'));
        const prefixes = (this.prefixes ?? []).flatMap((p) => ['PREFIX', p]);
        await connection.call('CLIENT', 'TRACKING', 'ON', 'REDIRECT', id, 'BCAST', ...prefixes);
        await connection.subscribe('__redis__:invalidate');
        // Writes before this moment were never heard of: whatever a read kept until now goes.
        this.reset();
        tracker.on = connection.status === 'ready';
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'valkey client tracking not on: reading without cache');
      }
    });
    return tracker;
  }

  private reset(): void {
    this.resetAt = ++this.invalidations;
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

  /** Whether reads go through the cache now (tracking on at every node holding the data). */
  get active(): boolean {
    if (this.trackers.size === 0) return false;
    for (const t of this.trackers.values()) if (!t.on) return false;
    return true;
  }

  /** The trackers' connections (one per node). */
  get connections(): Redis[] {
    return [...this.trackers.values()].map((t) => t.connection);
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

  /** Keeps what a read sent at `ticket` found of entity `key`, unless invalidated (or the cache reset) since. */
  put(key: string, parts: Part[], ticket: number): KeptEntity | undefined {
    const stale = ticket < this.resetAt || (ticket !== this.invalidations && (this.changed.get(key) ?? -1) > ticket);
    if (!stale && this.active) {
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
    this.closed = true;
    clearInterval(this.timer);
    this.clear();
    for (const t of this.trackers.values()) t.connection.disconnect();
    this.trackers.clear();
  }
}

/** Answers no longer kept: requests holding one (ReadRequest.answered) read again. */
function letGo(answers: Map<readonly string[], ReadResult>): void {
  for (const a of answers.values()) a.keptBy = undefined;
  answers.clear();
}

/**
 * Trackers connect at once (whatever the client they copy was told), never give up reconnecting, and resubscribe
 * themselves (their connection id changes).
 */
const TRACKER_OPTIONS = {
  lazyConnect: false,
  enableOfflineQueue: true,
  maxRetriesPerRequest: null,
  autoResubscribe: false,
};

/** The read cache as scoring uses it: for the entities rankings share (every group not keyed by the user). */
export function sharedEntityCache(features: FeatureSet, client: Redis | Cluster, log: Logger) {
  const names = features.groups
    .map((g) => g.group.entity)
    .filter((e) => !e.fields.includes('user_id'))
    .map((e) => e.name);
  return { tracked: new TrackedReadCache(client, names, log), entities: new Set(names) };
}
