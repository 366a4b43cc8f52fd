// Entity numbers by dense column ids, for the replay's tile rings: an array for one-field entities, an
// open-addressing table of (first id, second id) pairs for two-field ones. Typed arrays only: no per-entity
// objects for the collector to trace, and one cache line per lookup.

export interface EntityIndex {
  /** The entity number of ids (a, b) (b unused for one field), or `next` (recorded as its number) on first sight. */
  get(a: number, b: number, next: number): number;
  /** Forgets every entity (the space is kept). */
  clear(): void;
}

/** Entity numbers of one-field entities, by the field's id. */
export class SingleIndex implements EntityIndex {
  /** Entity number + 1 by id; 0 for none yet. */
  private byId = new Int32Array(1024);

  clear(): void {
    this.byId.fill(0);
  }

  get(id: number, _: number, next: number): number {
    if (id >= this.byId.length) {
      const grown = new Int32Array(Math.max(id + 1, this.byId.length * 2));
      grown.set(this.byId);
      this.byId = grown;
    }
    const found = this.byId[id] as number;
    if (found !== 0) return found - 1;
    this.byId[id] = next + 1;
    return next;
  }
}

/** Entity numbers of two-field entities, by the pair of the fields' ids. */
export class PairIndex implements EntityIndex {
  /** Per slot: first id, second id, entity number + 1 (0: free slot). */
  private slots = new Int32Array(3 * 1024);
  private mask = 1023;
  private size = 0;

  clear(): void {
    this.slots.fill(0);
    this.size = 0;
  }

  get(a: number, b: number, next: number): number {
    let i = hash(a, b) & this.mask;
    for (;;) {
      const at = 3 * i;
      const ent = this.slots[at + 2] as number;
      if (ent === 0) break;
      if (this.slots[at] === a && this.slots[at + 1] === b) return ent - 1;
      i = (i + 1) & this.mask;
    }
    this.put(i, a, b, next);
    // At most half full: probes stay short.
    if (++this.size * 2 > this.mask + 1) this.rehash();
    return next;
  }

  private put(i: number, a: number, b: number, ent: number): void {
    this.slots[3 * i] = a;
    this.slots[3 * i + 1] = b;
    this.slots[3 * i + 2] = ent + 1;
  }

  private rehash(): void {
    const old = this.slots;
    this.mask = this.mask * 2 + 1;
    this.slots = new Int32Array(3 * (this.mask + 1));
    for (let at = 0; at < old.length; at += 3) {
      const ent = old[at + 2] as number;
      if (ent === 0) continue;
      const a = old[at] as number;
      const b = old[at + 1] as number;
      let i = hash(a, b) & this.mask;
      while (this.slots[3 * i + 2] !== 0) i = (i + 1) & this.mask;
      this.put(i, a, b, ent - 1);
    }
  }
}

function hash(a: number, b: number): number {
  const h = Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca77);
  return h ^ (h >>> 15);
}
