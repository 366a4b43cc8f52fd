// The reference the engine (src/features/tile-rings.ts) is tested against: each admitted event's tile updates
// applied one by one to one store per entity, read through the online read path (parts.ts's answer), each
// impression read just before it is applied. Written to be obviously right, not fast; no pipeline path runs it.
import type { AdClick, AdImpression } from '../../src/events/types.ts';
import type { FeatureSet, Series } from '../../src/features/compile.ts';
import type { Source } from '../../src/features/define.ts';
import { entityKey } from '../../src/features/entities.ts';
import type { ReadRequest, ReadResult } from '../../src/features/read-plan.ts';
import type { StepChunk } from '../../src/features/tile-rings.ts';
import { tileOf } from '../../src/features/window.ts';
import type { FeatureReader } from '../../src/online/contract.ts';
import { emptyPart, type Part, PartLayout } from '../../src/online/parts.ts';

export class ReferenceStore implements FeatureReader {
  private readonly layout: PartLayout;
  private readonly parts = new Map<string, Part>();

  constructor(private readonly features: FeatureSet) {
    this.layout = new PartLayout(features);
  }

  /** Every tile update one admitted event of `source` makes, each folded by its series' merge. */
  apply(source: Source, e: AdImpression | AdClick): void {
    for (const { group, series } of this.features.bySource[source]) {
      const value = series.op.update(series.agg, e);
      if (value === null) continue;
      const key = entityKey((this.features.groups[group] as FeatureSet['groups'][number]).group.entity, e);
      let part = this.parts.get(key);
      if (part === undefined) {
        part = emptyPart();
        this.parts.set(key, part);
      }
      fold(part, series, tileOf(e.event_time, series.tileMs), value);
    }
  }

  readSync(requests: readonly ReadRequest[]): ReadResult[] {
    return requests.map((r) => this.layout.answer(r, this.parts.has(r.key) ? [this.parts.get(r.key) as Part] : []));
  }

  read(requests: readonly ReadRequest[]): Promise<ReadResult[]> {
    return Promise.resolve(this.readSync(requests));
  }
}

/** A replay state (backfill/replay.ts) over the reference store: each impression planned, read and assembled. */
export class ReferenceState {
  readonly store: ReferenceStore;
  constructor(private readonly features: FeatureSet) {
    this.store = new ReferenceStore(features);
  }

  stepChunk(c: StepChunk, out: Float64Array): void {
    for (let i = 0; i < c.length; i++) {
      const e = c.events[i] as AdImpression | AdClick;
      const source = c.sources[i] as Source;
      if (source === 'impression') {
        const plan = this.features.plan([e], e.event_time);
        const vector = this.features.assemble(plan, this.store.readSync(plan.requests))[0] as Float64Array;
        out.set(vector, (c.row[i] as number) * vector.length);
      }
      this.store.apply(source, e);
    }
  }
}

/** Folds one update into tile `tile` of `series` of a part, by the series' merge. */
function fold(part: Part, series: Series, tile: number, value: number | string): void {
  const merge = series.op.merge;
  if (merge === 'union') {
    part.s[series.id] ??= [];
    const pairs = part.s[series.id] as (number | string[])[];
    const at = slot(pairs, tile, () => [] as string[]);
    const held = pairs[at + 1] as string[];
    if (!held.includes(value as string)) held.push(value as string);
    return;
  }
  part.n[series.id] ??= [];
  const pairs = part.n[series.id] as number[];
  const at = slot(pairs, tile, () => (merge === 'add' ? 0 : (value as number)));
  const v = pairs[at + 1] as number;
  pairs[at + 1] = merge === 'add' ? v + (value as number) : Math.max(v, value as number);
}

/** The index of `tile`'s pair in flat (tile, value) pairs, inserted in tile order if missing. */
function slot<T>(pairs: (number | T)[], tile: number, empty: () => T): number {
  let at = 0;
  while (at < pairs.length && (pairs[at] as number) < tile) at += 2;
  if (pairs[at] !== tile) pairs.splice(at, 0, tile, empty());
  return at;
}
