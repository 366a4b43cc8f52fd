// What features are keyed by. An entity names the event fields that identify it.
import type { AdClick, AdImpression } from '../events/types.ts';

/** The fields every feature source and every ranking candidate carries. */
export type KeyFields = Pick<
  AdImpression & AdClick,
  'user_id' | 'ad_id' | 'campaign_id' | 'advertiser_id' | 'category' | 'publisher_id'
>;

/** The key fields in a fixed order: the order of the key ids a source may hand the replay (ReplayRecord.ids). */
export const KEY_FIELDS = [
  'user_id',
  'ad_id',
  'campaign_id',
  'advertiser_id',
  'category',
  'publisher_id',
] as const satisfies readonly (keyof KeyFields)[];

export interface Entity {
  readonly name: string;
  readonly fields: readonly (keyof KeyFields)[];
}

export const entities = {
  ad: { name: 'ad', fields: ['ad_id'] },
  campaign: { name: 'campaign', fields: ['campaign_id'] },
  advertiser: { name: 'advertiser', fields: ['advertiser_id'] },
  user: { name: 'user', fields: ['user_id'] },
  userCategory: { name: 'user_category', fields: ['user_id', 'category'] },
  publisher: { name: 'publisher', fields: ['publisher_id'] },
  adPublisher: { name: 'ad_publisher', fields: ['ad_id', 'publisher_id'] },
} as const satisfies Record<string, Entity>;

/** Joins a composite key's ids: ids that become keys may not hold it (validate.ts refuses them). */
export const KEY_SEPARATOR = '|';

/**
 * The entity instance an event belongs to, e.g. "user_category:u-7|cat-3". Also the store key's hash tag, so all
 * of one entity's state lives in one Valkey Cluster slot.
 */
export function entityKey(entity: Entity, e: KeyFields): string {
  let key = `${entity.name}:${e[entity.fields[0] as keyof KeyFields]}`;
  for (let i = 1; i < entity.fields.length; i++) key += `${KEY_SEPARATOR}${e[entity.fields[i] as keyof KeyFields]}`;
  return key;
}
