import { MockClient } from '@confluentinc/schemaregistry';
import { describe, expect, it } from 'vitest';
import { schemaText } from '../../src/events/catalog.ts';
import { backwardIncompatibility } from '../../src/events/registry.ts';
import { type BadEventError, EventSerde } from '../../src/events/serde.ts';
import type { AdImpression } from '../../src/events/types.ts';

const imp: AdImpression = {
  event_id: 'e1',
  event_time: Date.UTC(2026, 0, 1),
  request_id: null,
  user_id: 'u',
  ad_id: 'a',
  campaign_id: 'c',
  advertiser_id: 'v',
  category: 'k',
  publisher_id: 'p',
  device: 'mobile',
  os: 'ios',
  position: 1,
  bid: 0.5,
};

describe('wire format and schema rules (pure; the registry is the library in-memory client)', () => {
  it('frames as magic byte + schema id + Avro body and decodes back', async () => {
    const serde = new EventSerde(new MockClient());
    await serde.prepare(['impression']);
    const buf = serde.encode('impression', imp);
    expect(buf[0]).toBe(0);
    expect(buf.readUInt32BE(1)).toBe(serde.schemaId('impression'));
    expect(await serde.decode('impression', buf)).toEqual(imp);
  });

  it('rejects bad bytes with a reason', async () => {
    const serde = new EventSerde(new MockClient());
    await serde.prepare(['impression', 'click']);
    const reason = (p: Promise<unknown>) =>
      p.then(
        () => 'decoded',
        (e: BadEventError) => e.reason,
      );
    expect(await reason(serde.decode('impression', Buffer.from([1, 2])))).toMatch(/shorter than/);
    expect(await reason(serde.decode('impression', Buffer.from([7, 0, 0, 0, 1, 0])))).toMatch(/magic byte 7/);
    expect(await reason(serde.decode('impression', Buffer.from([0, 0, 0, 0x7f, 1, 0])))).toMatch(/unknown schema id/);
    const click = serde.encode('click', {
      ...imp,
      impression_id: 'x',
      impression_time: imp.event_time,
    } as never);
    expect(await reason(serde.decode('impression', click))).toMatch(/wrong schema/);
    const truncated = serde.encode('impression', imp).subarray(0, 12);
    expect(await reason(serde.decode('impression', truncated))).toMatch(/undecodable Avro body/);
    const future = serde.encode('impression', { ...imp, event_time: Date.now() + 3 * 86_400_000 });
    expect(await reason(serde.decode('impression', future))).toMatch(/in the future/);
    const empty = serde.encode('impression', { ...imp, ad_id: '' });
    expect(await reason(serde.decode('impression', empty))).toMatch(/ad_id is empty/);
  });

  it('judges backward compatibility: a new field needs a default', () => {
    const base = JSON.parse(schemaText('impression'));
    const withDefault = { ...base, fields: [...base.fields, { name: 'x', type: 'string', default: '' }] };
    const required = { ...base, fields: [...base.fields, { name: 'x', type: 'string' }] };
    expect(backwardIncompatibility(JSON.stringify(withDefault), schemaText('impression'))).toBeNull();
    expect(backwardIncompatibility(JSON.stringify(required), schemaText('impression'))).toMatch(/x/);
  });
});
