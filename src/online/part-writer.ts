// The stream's feature state, one engine with the backfill's: per source partition this process owns, the replay's
// tile rings (features/tile-rings.ts) stepped by the partition's admitted events, and after each batch every
// entity it touched written whole as that partition's part (parts.ts). An entity first touched here is loaded from
// the store before its first update, so the rings continue what any earlier owner wrote; the store's parts are the
// state's durable copy (a restart or a rebalance loads again what it touches).
import type { AdClick, AdImpression } from '../events/types.ts';
import type { FeatureSet } from '../features/compile.ts';
import type { Source } from '../features/define.ts';
import { type EntityRef, type StepChunk, TileDroppedError, TileRings } from '../features/tile-rings.ts';
import type { Part } from './parts.ts';

/** What a store keeps for the writer: parts by entity key and source partition, each with its batch end marker. */
export interface PartStore {
  /** The part `source` wrote for each entity (null: none), with `o` its marker (the last batch end applied). */
  loadParts(keys: readonly string[], source: string): Promise<(Part | null)[]>;
  /** Replaces each entity's part from `source` unless its marker is at or past `endOffset` (JSON, `o` set). */
  writeParts(keys: readonly string[], parts: readonly string[], source: string, endOffset: number): Promise<void>;
}

/** A batch's admitted events of one source partition, in log order. */
export interface AdmittedEvents {
  readonly source: Source;
  readonly events: readonly (AdImpression | AdClick)[];
}

/** Entities held in process over all source partitions by default; past it a partition's rings start over. */
const MAX_ENTITIES = 400_000;

interface Owned {
  rings: TileRings;
  /** The last batch end applied. */
  end: number;
}

export class PartWriter {
  private readonly owned = new Map<string, Owned>();

  constructor(
    private readonly features: FeatureSet,
    private readonly store: PartStore,
    private readonly maxEntities = MAX_ENTITIES,
  ) {}

  /** Drops what is held for `source`: read again from the store before its next batch. */
  forget(source: string): void {
    this.owned.delete(source);
  }

  /**
   * Applies a batch of `source` ending at `endOffset` and writes the parts it changed. `before`: the event time
   * below which no partition writes any more (the prune horizon); tiles no read at or after it can ask for are
   * dropped. Idempotent: an entity whose stored part already holds the batch sits it out.
   */
  async apply(admitted: AdmittedEvents, source: string, endOffset: number, before: number): Promise<void> {
    const fresh = () => {
      const o: Owned = { rings: new TileRings(this.features), end: -1 };
      this.owned.set(source, o);
      return o;
    };
    let owned = this.owned.get(source);
    // A batch not past the last one applied here (a retry after a failed write) is applied to the stored state.
    if (owned === undefined || owned.end >= endOffset) owned = fresh();
    try {
      await this.step(owned, admitted, source, endOffset, before).catch((err) => {
        // An event older than what the rings dropped (the horizon moved back): fresh rings load what is stored.
        if (!(err instanceof TileDroppedError)) throw err;
        owned = fresh();
        return this.step(owned, admitted, source, endOffset, before);
      });
    } catch (err) {
      // Some parts may be written, others not, and the rings moved on: read them again next time.
      this.forget(source);
      throw err;
    }
    owned.end = endOffset;
    let held = 0;
    for (const o of this.owned.values()) held += o.rings.size;
    if (held > this.maxEntities) this.forget(source);
  }

  private async step(owned: Owned, admitted: AdmittedEvents, source: string, endOffset: number, before: number) {
    const { rings } = owned;
    // Tiles may be overwritten below the horizon, and below none of this batch's events.
    let low = before;
    for (const e of admitted.events) if (e.event_time < low) low = e.event_time;
    const chunk = chunkOf(admitted, low);
    const found = rings.locate(chunk);
    if (found.length > 0) {
      const parts = await this.store.loadParts(
        found.map((e) => e.key),
        source,
      );
      found.forEach((e: EntityRef, i) => {
        const part = parts[i];
        if (!part) return;
        rings.loadPart(e, part, before);
        if (part.o >= endOffset) rings.freeze(e);
      });
    }
    rings.stepChunk(chunk);
    const keys: string[] = [];
    const json: string[] = [];
    rings.exportTouched(before, endOffset, (key, part) => {
      keys.push(key);
      json.push(part);
    });
    if (keys.length > 0) await this.store.writeParts(keys, json, source, endOffset);
  }
}

/** The events as the rings step them; tiles older than `low` by a whole window may be overwritten. */
export function chunkOf(admitted: AdmittedEvents, low: number): StepChunk {
  const n = admitted.events.length;
  const c: StepChunk = {
    length: n,
    events: admitted.events as (AdImpression | AdClick)[],
    time: new Float64Array(n),
    sources: new Array<Source>(n).fill(admitted.source),
    keyIds: new Array(n).fill(undefined),
    keyIdsAt: new Int32Array(n),
    lowWatermark: new Float64Array(n).fill(low),
    row: new Int32Array(n),
  };
  for (let i = 0; i < n; i++) {
    c.time[i] = (admitted.events[i] as AdImpression | AdClick).event_time;
    c.row[i] = i;
  }
  return c;
}

/**
 * Applies a log's impressions and clicks to a store as one batch of each source ("<name>/impression",
 * "<name>/click"): a store loaded outside the stream (benches, tests).
 */
export async function applyLog(
  store: { applyBatch(batch: AdmittedEvents, source: string, endOffset: number, horizon?: number): Promise<void> },
  log: readonly { record: { kind: string; event: unknown } }[],
  name: string,
  horizon?: number,
  endOffset = 0,
): Promise<void> {
  for (const source of ['impression', 'click'] as const) {
    const events = log.filter((r) => r.record.kind === source).map((r) => r.record.event as AdImpression | AdClick);
    if (events.length > 0) await store.applyBatch({ source, events }, `${name}/${source}`, endOffset, horizon);
  }
}
