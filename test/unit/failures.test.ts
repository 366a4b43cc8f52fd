// Which sink errors stop the stream (retrying cannot help) and which are retried.
import { ClickHouseError } from '@clickhouse/client';
import { describe, expect, it } from 'vitest';
import { permanentFailure } from '../../src/streams/failures.ts';

describe('permanent sink failures', () => {
  it("takes ClickHouse's own error for what it is: a refused statement stops, a transient code is retried", () => {
    const refused = new ClickHouseError({ message: 'Unknown table', code: '60', type: 'UNKNOWN_TABLE' });
    expect(permanentFailure(refused)).toMatch(/ClickHouse refused the write \(code 60\)/);
    const busy = new ClickHouseError({ message: 'Too many parts', code: '252', type: 'TOO_MANY_PARTS' });
    expect(permanentFailure(busy)).toBeUndefined();
    expect(permanentFailure(new Error('socket hang up'))).toBeUndefined();
  });
});
