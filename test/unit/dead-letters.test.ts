import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { packDeadLetters, recordBytes } from '../../src/streams/dead-letters.ts';
import type { OutMessage } from '../../src/streams/event-log.ts';

const letter = (size: number, i: number): OutMessage => ({
  key: `k${i}`,
  value: Buffer.alloc(size, i % 256),
  headers: { reason: `bad ${i}`, source_topic: 't', source_partition: '0', source_offset: String(i) },
});

describe('dead-letter requests', () => {
  it('keeps every letter once, in order, each request under the limit, cutting only what alone exceeds it', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.nat({ max: 2000 }), fc.integer({ min: 5000, max: 60_000 })), { maxLength: 60 }),
        fc.integer({ min: 4096, max: 50_000 }),
        (sizes, limit) => {
          const letters = sizes.map(letter);
          const requests = packDeadLetters(letters, limit);
          const out = requests.flat();
          expect(out.map((m) => m.headers?.source_offset)).toEqual(letters.map((m) => m.headers?.source_offset));
          for (const r of requests) {
            expect(r.length).toBeGreaterThan(0);
            expect(128 + r.reduce((s, m) => s + recordBytes(m), 0)).toBeLessThanOrEqual(limit);
          }
          out.forEach((m, i) => {
            const original = letters[i] as OutMessage;
            const cut = m.headers?.truncated === 'true';
            expect(cut).toBe(128 + recordBytes(original) > limit);
            expect(m.headers?.reason).toBe(original.headers?.reason);
            if (cut) {
              expect(m.headers?.original_size).toBe(String(original.value?.length));
              expect(original.value?.subarray(0, m.value?.length).equals(m.value as Buffer)).toBe(true);
            } else expect(m.value).toBe(original.value);
          });
        },
      ),
    );
  });
});
