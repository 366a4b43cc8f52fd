// What the pipeline asks of an online store (Valkey, or in-process for the embedded default): the scorer and the
// served-vector check read through it, the stream writes a batch's admitted events through it. The stores implement
// it here beside it; the pure core (src/features) only plans reads and makes updates.
import type { ReadRequest, ReadResult } from '../features/read-plan.ts';
import type { AdmittedEvents } from './part-writer.ts';
import type { Part } from './parts.ts';

/** Answers read requests: the online store's read side (Valkey, or in-process for the embedded default). */
export interface FeatureReader {
  read(requests: readonly ReadRequest[]): Promise<ReadResult[]>;
}

/** The online store's write side: applies a batch of admitted events once per (entity, source partition, batch end
 * offset), through the engine's state (part-writer.ts). */
export interface TileWriter {
  /**
   * Idempotent: each entity remembers the last batch end offset applied from `source` (a topic/partition) and
   * ignores a batch that does not go beyond it, so a batch replayed after a crash is not counted twice.
   * `horizon`: the event time below which no source partition writes any more (the group's slowest watermark);
   * the store may drop tiles older than it by more than any read within the retention can ask for.
   */
  applyBatch(batch: AdmittedEvents, source: string, endOffset: number, horizon?: number): Promise<void>;
  /**
   * Says the caller may no longer be the only writer from `source` since its last batch (it lost the partition, or
   * restarts it from a checkpoint): whatever the store holds in process for it is read again before the next batch.
   */
  forget(source: string): void;
}

/** Reads entities' parts as they are (for a served-vector overlay, streams/served.ts). */
export interface PartReader {
  readParts(keys: readonly string[]): Promise<Part[][]>;
}
