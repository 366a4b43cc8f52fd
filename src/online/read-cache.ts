// Server-assisted client-side caching of stored fields (Valkey CLIENT TRACKING): values read from a hash (on a
// connection of the cache's own) are kept in process, and Valkey tells us (on another) when that hash changes, so
// a kept value is always the one Valkey holds, give or take the invalidation's way over the network. Rankings
// share their candidates' hashes (ads, campaigns, placements: read by every request), which change only when a late
// event lands in a window already being read; so most of a ranking's reads are answered here and only the rest go
// to Valkey.
import type { Redis } from 'iovalkey';
import type { Logger } from 'pino';
import type { FeatureSet } from '../features/compile.ts';
import type { ReadResult } from '../features/read-plan.ts';
import { getOrCreate } from '../util/map.ts';

/** Read layouts kept (7 groups' layouts per read tile: a few tiles' worth). */
const MAX_LAYOUTS = 64;
/** Cached rows (an entity in a layout) past which the cache starts over: bounds memory, costs one miss each. */
const MAX_ROWS = 500_000;

/** One entity's values in a cached layout: each column valid while its version is the layout's. */
interface Row {
  values: (number | null)[];
  versions: Int32Array;
  /**
   * Every column at once, shared by every read while the layout's epoch is `epoch` (no column of the layout has
   * changed since they were all valid): a ranking's candidates are mostly these, looked up in one step.
   */
  whole: ReadResult | undefined;
  epoch: number;
}

const NO_SETS: readonly number[] = [];

export interface CachedLayout {
  /** Per field (column), the hash it is read from, and its version (bumped when the hash changes). */
  readonly hashes: readonly string[];
  readonly versions: Int32Array;
  /** Bumped with any column's version. */
  epoch: number;
  /** By entity key. */
  readonly rows: Map<string, Row>;
}

export class TrackedReadCache {
  private readonly layouts = new Map<readonly string[], CachedLayout>();
  /** Where each hash is read: the (layout, column) pairs its invalidation makes stale. */
  private readonly byHash = new Map<string, { layout: CachedLayout; column: number }[]>();
  private rows = 0;
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
    this.layouts.clear();
    this.byHash.clear();
    this.rows = 0;
  }

  /** A changed hash (or, null, a flushed database): its column of every layout that reads it is stale. */
  private invalidate(key: string | null): void {
    this.stats.invalidations++;
    if (key === null) this.clear();
    else
      for (const { layout, column } of this.byHash.get(key) ?? []) {
        layout.versions[column] = (layout.versions[column] as number) + 1;
        layout.epoch++;
      }
  }

  /** Whether reads go through the cache now (tracking on). */
  get active(): boolean {
    return this.tracking;
  }

  /**
   * The cached rows of a group's read layout (the `fields` array FeatureSet.plan shares for one read tile), made
   * on first use with the hashes its fields live in; undefined while tracking is off (read everything).
   */
  layout(fields: readonly string[], hashesOf: () => string[]): CachedLayout | undefined {
    if (!this.tracking) return undefined;
    let layout = this.layouts.get(fields);
    if (layout) return layout;
    // Layouts of past read tiles are not read again: keep the newest few.
    if (this.layouts.size >= MAX_LAYOUTS) this.drop(this.layouts.keys().next().value as readonly string[]);
    layout = { hashes: hashesOf(), versions: new Int32Array(fields.length), epoch: 0, rows: new Map() };
    this.layouts.set(fields, layout);
    layout.hashes.forEach((hash, column) => {
      getOrCreate(this.byHash, hash, () => []).push({ layout: layout as CachedLayout, column });
    });
    return layout;
  }

  private drop(fields: readonly string[]): void {
    const layout = this.layouts.get(fields) as CachedLayout;
    this.layouts.delete(fields);
    this.rows -= layout.rows.size;
    for (const hash of layout.hashes) {
      const left = (this.byHash.get(hash) ?? []).filter((x) => x.layout !== layout);
      if (left.length > 0) this.byHash.set(hash, left);
      else this.byHash.delete(hash);
    }
  }

  /** Entity `key`'s whole cached read, when no column of the layout changed since it was whole; else undefined. */
  whole(layout: CachedLayout, key: string): ReadResult | undefined {
    const row = layout.rows.get(key);
    if (row?.whole === undefined || row.epoch !== layout.epoch) return undefined;
    this.stats.hits += layout.hashes.length;
    return row.whole;
  }

  /**
   * Copies entity `key`'s valid cached columns into `into` and appends `request` to `missing[column]` for each
   * column it lacks or holds stale (allocation-free: called per entity of every ranking).
   */
  lookup(layout: CachedLayout, key: string, into: (number | null)[], missing: number[][], request: number): void {
    const row = layout.rows.get(key);
    for (let f = 0; f < layout.versions.length; f++) {
      if (row && row.versions[f] === layout.versions[f]) {
        into[f] = row.values[f] as number | null;
        this.stats.hits++;
      } else {
        (missing[f] as number[]).push(request);
        this.stats.misses++;
      }
    }
  }

  /**
   * Keeps `value` as column `column` of entity `key`'s row, unless the column was invalidated since the read was
   * sent (`version`: the column's version then).
   */
  store(layout: CachedLayout, column: number, version: number, key: string, value: number | null): void {
    if (layout.versions[column] !== version) return;
    let row = layout.rows.get(key);
    if (!row) {
      if (this.rows >= MAX_ROWS) this.clear();
      row = {
        values: new Array(layout.hashes.length).fill(null),
        versions: new Int32Array(layout.hashes.length).fill(-1),
        whole: undefined,
        epoch: -1,
      };
      layout.rows.set(key, row);
      this.rows++;
    }
    row.values[column] = value;
    row.versions[column] = version;
    if (row.versions.every((v, f) => v === layout.versions[f])) {
      row.whole = { values: row.values.slice(), setCounts: NO_SETS, shared: true };
      row.epoch = layout.epoch;
    }
  }

  close(): void {
    this.reader.disconnect();
    this.subscriber.disconnect();
  }
}

/**
 * The read cache as scoring uses it: for the entities rankings share (every group not keyed by the user), on a
 * single Valkey node (a Cluster would need tracking per node).
 */
export function sharedEntityCache(features: FeatureSet, client: Redis, log: Logger) {
  const entities = features.groups.map((g) => g.group.entity).filter((e) => !e.fields.includes('user_id'));
  return { tracked: TrackedReadCache.start(client, log), entities: new Set(entities.map((e) => e.name)) };
}
