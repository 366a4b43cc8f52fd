// The in-process online store: the embedded default, a served-vector overlay, and tests' reference state. The same
// parts as the Valkey store (parts.ts), held in Maps: per entity, a part per source partition (and one, "", for
// updates made through UpdateSink directly).
import type { FeatureSet, Series } from '../features/compile.ts';
import type { ReadRequest, ReadResult } from '../features/read-plan.ts';
import type { UpdateSink } from '../features/update.ts';
import type { FeatureReader, PartReader, TileWriter } from './contract.ts';
import { type AdmittedEvents, type PartStore, PartWriter } from './part-writer.ts';
import { emptyPart, type Part, PartLayout } from './parts.ts';

const NONE: Part[] = [];

export class MemoryStore implements UpdateSink, FeatureReader, TileWriter, PartReader, PartStore {
  private readonly layout: PartLayout;
  /** Per entity key, its parts by source (as written, JSON, until read). */
  private readonly entities = new Map<string, Map<string, Part | string>>();
  private readonly writer: PartWriter;

  constructor(features: FeatureSet) {
    this.layout = new PartLayout(features);
    // The only copy: nothing is let go.
    this.writer = new PartWriter(features, this, Number.POSITIVE_INFINITY);
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
    } else if (typeof part === 'string') {
      part = JSON.parse(part) as Part;
      parts.set(source, part);
    }
    return part;
  }

  update(key: string, series: Series, tile: number, value: number | string): void {
    this.layout.fold(this.part(key, ''), series, tile, value);
  }

  /** Holds another store's parts of entity `key` (read only: updates here go to this store's own part). */
  hold(key: string, parts: readonly Part[]): void {
    const held = this.entities.get(key) ?? new Map<string, Part | string>();
    parts.forEach((p, i) => {
      held.set(`@${i}`, p);
    });
    this.entities.set(key, held);
  }

  applyBatch(batch: AdmittedEvents, source: string, endOffset: number, horizon = 0): Promise<void> {
    return this.writer.apply(batch, source, endOffset, horizon);
  }

  loadParts(keys: readonly string[], source: string): Promise<(Part | null)[]> {
    return Promise.resolve(keys.map((k) => (this.entities.get(k)?.has(source) ? this.part(k, source) : null)));
  }

  writeParts(keys: readonly string[], parts: readonly string[], source: string, endOffset: number): Promise<void> {
    keys.forEach((key, i) => {
      let held = this.entities.get(key);
      if (held === undefined) {
        held = new Map();
        this.entities.set(key, held);
      }
      const stored = held.get(source);
      const end = stored === undefined ? -1 : typeof stored === 'string' ? markerOf(stored) : stored.o;
      if (end < endOffset) held.set(source, parts[i] as string);
    });
    return Promise.resolve();
  }

  forget(source: string): void {
    this.writer.forget(source);
  }

  private partsOf(key: string): Part[] {
    const parts = this.entities.get(key);
    if (!parts) return NONE;
    const out: Part[] = [];
    for (const source of parts.keys()) out.push(this.part(key, source));
    return out;
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

/** The batch end marker of a part's JSON (its leading "o"). */
function markerOf(json: string): number {
  return Number(json.slice(5, json.indexOf(',', 5)));
}
