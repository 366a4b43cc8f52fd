// The in-process online store: the embedded default, a served-vector overlay, and tests' reference state. The same
// parts as the Valkey store (parts.ts), held in Maps: per entity, a part per source partition (and one, "", for
// updates made through UpdateSink directly).
import type { FeatureSet, Series } from '../features/compile.ts';
import type { ReadRequest, ReadResult } from '../features/read-plan.ts';
import type { TileBatch } from '../features/tile-batch.ts';
import type { UpdateSink } from '../features/update.ts';
import type { FeatureReader, PartReader, TileWriter } from './contract.ts';
import { emptyPart, type Part, PartLayout } from './parts.ts';

const NONE: Part[] = [];

export class MemoryStore implements UpdateSink, FeatureReader, TileWriter, PartReader {
  private readonly layout: PartLayout;
  /** Per entity key, its parts by source. */
  private readonly entities = new Map<string, Map<string, Part>>();

  constructor(features: FeatureSet) {
    this.layout = new PartLayout(features);
  }

  private part(key: string, source: string): Part {
    let parts = this.entities.get(key);
    if (parts === undefined) {
      parts = new Map();
      this.entities.set(key, parts);
    }
    let part = parts.get(source);
    if (part === undefined) {
      part = emptyPart();
      parts.set(source, part);
    }
    return part;
  }

  update(key: string, series: Series, tile: number, value: number | string): void {
    this.layout.fold(this.part(key, ''), series, tile, value);
  }

  /** Holds another store's parts of entity `key` (read only: updates here go to this store's own part). */
  hold(key: string, parts: readonly Part[]): void {
    const held = this.entities.get(key) ?? new Map<string, Part>();
    parts.forEach((p, i) => {
      held.set(`@${i}`, p);
    });
    this.entities.set(key, held);
  }

  applyBatch(batch: TileBatch, source: string, endOffset: number): Promise<void> {
    for (const [key, u] of batch.entities) {
      const part = this.part(key, source);
      if (part.o >= endOffset) continue; // already applied (a replay)
      this.layout.apply(part, u);
      part.o = endOffset;
    }
    return Promise.resolve();
  }

  /** Nothing to read again: this store is the only copy. */
  forget(): void {}

  private partsOf(key: string): Part[] {
    const parts = this.entities.get(key);
    return parts ? [...parts.values()] : NONE;
  }

  readSync(requests: readonly ReadRequest[]): ReadResult[] {
    return requests.map((r) => this.layout.answer(r, this.partsOf(r.key)));
  }

  read(requests: readonly ReadRequest[]): Promise<ReadResult[]> {
    return Promise.resolve(this.readSync(requests));
  }

  readParts(keys: readonly string[]): Promise<Part[][]> {
    return Promise.resolve(keys.map((k) => this.partsOf(k)));
  }
}
