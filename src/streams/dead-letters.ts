// Dead letters as produce requests the dead-letter topic accepts: a broker refuses a record batch larger than the
// topic's max.message.bytes (a permanent error), so a batch's letters go in requests under that size, and a letter
// that alone exceeds it keeps its coordinates, reason and original size with as much of its value as fits.
import type { OutMessage } from './event-log.ts';

/** Under the broker's default max.message.bytes (1 MiB + 12), leaving room for the request's own framing. */
export const DEFAULT_DEAD_LETTER_BYTES = 1_000_000;

/** A record's framing in a v2 record batch (varint lengths, deltas, attributes), rounded up. */
const RECORD_OVERHEAD = 64;
/** A record batch's own header. */
const BATCH_OVERHEAD = 128;

function headerBytes(m: OutMessage): number {
  let n = 0;
  for (const [k, v] of Object.entries(m.headers ?? {})) n += Buffer.byteLength(k) + Buffer.byteLength(v) + 8;
  return n;
}

function keyBytes(m: OutMessage): number {
  return m.key == null ? 0 : typeof m.key === 'string' ? Buffer.byteLength(m.key) : m.key.length;
}

export function recordBytes(m: OutMessage): number {
  return RECORD_OVERHEAD + keyBytes(m) + (m.value?.length ?? 0) + headerBytes(m);
}

/** The letter cut to fit `maxBytes` alone: the value's head, and headers saying it was cut and from what size. */
function truncated(m: OutMessage, maxBytes: number): OutMessage {
  const original = m.value?.length ?? 0;
  const headers = { ...m.headers, truncated: 'true', original_size: String(original) };
  const room = maxBytes - BATCH_OVERHEAD - RECORD_OVERHEAD - keyBytes(m) - headerBytes({ ...m, headers });
  const key = room < 0 && typeof m.key !== 'string' ? m.key?.subarray(0, 1024) : m.key;
  return { ...m, key: key ?? null, value: m.value?.subarray(0, Math.max(0, room)) ?? null, headers };
}

/** Letters in send order, grouped into requests of at most `maxBytes` each (a letter over it alone, truncated). */
export function packDeadLetters(messages: readonly OutMessage[], maxBytes: number): OutMessage[][] {
  const requests: OutMessage[][] = [];
  let current: OutMessage[] = [];
  let size = BATCH_OVERHEAD;
  for (const original of messages) {
    const m = BATCH_OVERHEAD + recordBytes(original) > maxBytes ? truncated(original, maxBytes) : original;
    const bytes = recordBytes(m);
    if (current.length > 0 && size + bytes > maxBytes) {
      requests.push(current);
      current = [];
      size = BATCH_OVERHEAD;
    }
    current.push(m);
    size += bytes;
  }
  if (current.length > 0) requests.push(current);
  return requests;
}
