// The in-process online store, the embedded default: the same parts as the Valkey store (parts.ts), written by the
// same engine (part-writer.ts), held in Maps: per entity, a part per source partition.
import type { FeatureSet } from '../features/compile.ts';
import type { ReadRequest, ReadResult } from '../features/read-plan.ts';
import type { FeatureReader, PartReader, TileWriter } from './contract.ts';
import { type AdmittedEvents, type PartStore, PartWriter } from './part-writer.ts';
import { type Part, PartLayout } from './parts.ts';

const NONE: Part[] = [];

export class MemoryStore implements FeatureReader, TileWriter, PartReader, PartStore {
  private readonly layout: PartLayout;
  /** Per entity key, its parts by source (as written, JSON, until read). */
  private readonly entities = new Map<string, Map<string, Part | string>>();
  private readonly writer: PartWriter;

  constructor(features: FeatureSet) {
    this.layout = new PartLayout(features);
    // The only copy: nothing is let go.
    this.writer = new PartWriter(features, this, Number.POSITIVE_INFINITY);
  }

  /** Entity `key`'s part from `source`, parsed on first read. */
  private part(key: string, source: string): Part | null {
    const parts = this.entities.get(key);
    let part = parts?.get(source);
    if (typeof part === 'string') {
      part = JSON.parse(part) as Part;
      parts?.set(source, part);
    }
    return part ?? null;
  }

  applyBatch(batch: AdmittedEvents, source: string, endOffset: number, horizon = 0): Promise<void> {
    return this.writer.apply(batch, source, endOffset, horizon);
  }

  loadParts(keys: readonly string[], source: string): Promise<(Part | null)[]> {
    return Promise.resolve(keys.map((k) => this.part(k, source)));
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
    for (const source of parts.keys()) out.push(this.part(key, source) as Part);
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
