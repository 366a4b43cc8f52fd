// The read side's plan: for the contexts of a ranking (or a training row) at time t, the stored fields and sets of
// every entity they need, deduplicated, so a store answers all of them in one round trip.

import { getOrCreate } from '../util/map.ts';
import type { CompiledGroup, Series } from './compile.ts';
import { entityKey, type KeyFields } from './entities.ts';
import { firstTile, tileOf } from './window.ts';

/** One entity's reads at one time: numeric fields (null when absent) and unions of sets to count. */
export interface ReadRequest {
  readonly key: string;
  readonly fields: readonly string[];
  readonly sets: readonly (readonly string[])[];
  /**
   * The shared result a store last answered this request with (plans reuse requests while their layout lasts): given
   * again by the cache that keeps it, with no lookup, while it does (ReadResult.keptBy).
   */
  answered?: ReadResult;
}
export interface ReadResult {
  values: readonly (number | null)[];
  setCounts: readonly number[];
  /** The same object answers many reads (a cache's row) and never changes: assembly keeps its features. */
  readonly shared?: boolean;
  /** For a shared result, the cache that keeps it current; unset once it does not (the entity changed, or let go). */
  keptBy?: object;
  /** For a shared result, where an assembler keeps its group features (made once, for read time t). */
  assembled?: { by: object; epoch: number; t: number; at: number };
}

export interface ReadPlan {
  readonly t: number;
  readonly contexts: number;
  readonly requests: readonly ReadRequest[];
  /** The group each request reads. */
  readonly groupOf: readonly number[];
  /** refs[context * groups + group] = index of the request that answers it. */
  readonly refs: Int32Array;
}

interface Layout {
  fields: string[];
  sets: string[][];
  /**
   * The requests plans made at this layout, by the entity's field values (a Map per field), reused by later plans
   * while the layout lasts: an entity read again needs no new key string (making and hashing one per candidate and
   * group was most of a plan's time), and stores find its key hashed already.
   */
  requests: Map<string, unknown>;
  kept: number;
}

/** A read field's name prefix, "<series>.<block>:": the field "<prefix><r>" is the total of tiles r - block … r - 1. */
export function storedPrefix(s: Series, block: number): string {
  return `${s.id}.${block}:`;
}

/** A request a layout keeps, with where the plan that last took it has it (no lookup to deduplicate). */
interface KeptRequest extends ReadRequest {
  plan: number;
  at: number;
}

/** Requests a layout keeps at most (then it starts over): bounds memory for numerous entities such as users. */
const MAX_KEPT_REQUESTS = 50_000;

/**
 * Field names a group reads at t: per numeric window, its stored blocks for t's tile (one field, or one per tile);
 * per distinct window, its tiles' sets.
 */
function layout(g: CompiledGroup, t: number): Layout {
  const fields: string[] = [];
  const sets: string[][] = [];
  for (const slot of g.slots) {
    const s = g.series[slot.series] as Series;
    if (s.op.merge !== 'union') {
      const prefix = storedPrefix(s, slot.block);
      const r = tileOf(t, s.tileMs);
      for (let j = 0; j < slot.window.tiles; j += slot.block) fields.push(prefix + (r - j));
      continue;
    }
    const first = firstTile(t, slot.window);
    sets.push(Array.from({ length: slot.window.tiles }, (_, i) => `${s.id}:${first + i}`));
  }
  return { fields, sets, requests: new Map(), kept: 0 };
}

function sameEntity(fields: readonly (keyof KeyFields)[], a: KeyFields, b: KeyFields): boolean {
  for (let i = 0; i < fields.length; i++)
    if (a[fields[i] as keyof KeyFields] !== b[fields[i] as keyof KeyFields]) return false;
  return true;
}

/** Plans reads against compiled groups, keeping what consecutive plans share (layouts, keys). */
export class ReadPlanner {
  constructor(private readonly groups: readonly CompiledGroup[]) {}

  /** The last layout per group: consecutive reads mostly fall in the same smallest tile and share it. */
  private readonly layoutCache: { tile: number; layout: Layout }[] = [];
  /** Plans made so far: numbers each, marking the kept requests it took. */
  private plans = 0;

  private layoutAt(i: number, g: CompiledGroup, t: number): Layout {
    // Tile widths are multiples of the group's smallest one and aligned to the epoch, so the same smallest tile
    // means the same tiles for every series.
    const tile = tileOf(t, g.minTileMs);
    const cached = this.layoutCache[i];
    if (cached?.tile === tile) return cached.layout;
    const fresh = { tile, layout: layout(g, t) };
    this.layoutCache[i] = fresh;
    return fresh.layout;
  }

  /** Read requests for every entity the contexts need at time t, deduplicated (one round trip for all). */
  plan(contexts: readonly KeyFields[], t: number): ReadPlan {
    const groups = this.groups.length;
    const requests: ReadRequest[] = [];
    const groupOf: number[] = [];
    const refs = new Int32Array(contexts.length * groups);
    const plan = ++this.plans;
    for (let gi = 0; gi < groups; gi++) {
      const g = this.groups[gi] as CompiledGroup;
      const l = this.layoutAt(gi, g, t);
      const fields = g.group.entity.fields;
      const last = fields.length - 1;
      if (l.kept >= MAX_KEPT_REQUESTS) {
        l.requests.clear();
        l.kept = 0;
      }
      let r = -1;
      for (let ci = 0; ci < contexts.length; ci++) {
        const ctx = contexts[ci] as KeyFields;
        // A context with the same entity as the one before (a ranking's user, say) needs no lookup.
        if (ci > 0 && sameEntity(fields, ctx, contexts[ci - 1] as KeyFields)) {
          refs[ci * groups + gi] = r;
          continue;
        }
        let m = l.requests;
        for (let f = 0; f < last; f++)
          m = getOrCreate(m, ctx[fields[f] as keyof KeyFields], () => new Map()) as typeof m;
        const value = ctx[fields[last] as keyof KeyFields];
        let request = m.get(value) as KeptRequest | undefined;
        if (request === undefined) {
          request = { key: entityKey(g.group.entity, ctx), fields: l.fields, sets: l.sets, plan: 0, at: 0 };
          m.set(value, request);
          l.kept++;
        }
        if (request.plan !== plan) {
          request.plan = plan;
          request.at = requests.length;
          requests.push(request);
          groupOf.push(gi);
        }
        r = request.at;
        refs[ci * groups + gi] = r;
      }
    }
    return { t, contexts: contexts.length, requests, groupOf, refs };
  }
}
