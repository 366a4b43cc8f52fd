// Schema Registry access: a Confluent-API server when a URL is configured, else the client library's in-memory
// registry (embedded default). Both sit behind the same `Client` interface.
// The client modules alone: the package's index also loads every serde and KMS driver (AWS, Azure, GCP, Vault),
// ≈ 0.7 s of every command's start.
import type { Client } from '@confluentinc/schemaregistry';
import { MockClient } from '@confluentinc/schemaregistry/dist/mock-schemaregistry-client.js';
import { Compatibility, SchemaRegistryClient } from '@confluentinc/schemaregistry/dist/schemaregistry-client.js';
import { avroType, schemaText, subjectFor } from './catalog.ts';
import { EVENT_KINDS, type EventKind } from './types.ts';

export function createRegistryClient(url?: string): Client {
  if (!url) return new MockClient();
  return new SchemaRegistryClient({ baseURLs: [url], cacheCapacity: 1000 });
}

/**
 * Why `next` cannot read data written with `previous` (BACKWARD compatibility), or null when it can.
 * Checked here before registering so a bad change fails with a readable reason even on the in-memory registry.
 */
export function backwardIncompatibility(next: string, previous: string): string | null {
  try {
    avroType(next).createResolver(avroType(previous));
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

export class SchemaCompatibilityError extends Error {
  constructor(
    readonly subject: string,
    reason: string,
  ) {
    super(`schema change for ${subject} is not backward compatible: ${reason}`);
  }
}

function is404(err: unknown): boolean {
  return (err as { status?: number }).status === 404;
}

/** Sets BACKWARD on the subject, checks the change locally, then registers; returns the schema id. */
export async function registerSchema(client: Client, kind: EventKind, schema = schemaText(kind)): Promise<number> {
  const subject = subjectFor(kind);
  let latest: string | undefined;
  try {
    latest = (await client.getLatestSchemaMetadata(subject)).schema;
  } catch (err) {
    if (!is404(err)) throw err;
  }
  if (latest !== undefined) {
    const reason = backwardIncompatibility(schema, latest);
    if (reason) throw new SchemaCompatibilityError(subject, reason);
  }
  await client.updateConfig(subject, { compatibility: Compatibility.BACKWARD });
  try {
    return await client.register(subject, { schemaType: 'AVRO', schema }, false);
  } catch (err) {
    if ((err as { status?: number }).status === 409)
      throw new SchemaCompatibilityError(subject, (err as Error).message);
    throw err;
  }
}

export async function registerAll(client: Client, kinds = EVENT_KINDS): Promise<Map<EventKind, number>> {
  const ids = new Map<EventKind, number>();
  for (const kind of kinds) ids.set(kind, await registerSchema(client, kind));
  return ids;
}
