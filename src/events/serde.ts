// Event <-> Kafka message bytes in Confluent's wire format, schemas resolved through the registry.
import type { Client } from '@confluentinc/schemaregistry';
import type avro from 'avsc';
import { avroType, schemaText } from './catalog.ts';
import { registerSchema } from './registry.ts';
import type { EventByKind, EventKind } from './types.ts';
import { type Clock, validateEvent } from './validate.ts';
import { frame, HEADER_LENGTH, schemaIdOf } from './wire.ts';

/** A message the pipeline cannot use; `reason` goes to the dead-letter topic. */
export class BadEventError extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

interface Reader {
  type: avro.Type;
  resolver: avro.Resolver;
}

export class EventSerde {
  private readonly writers = new Map<EventKind, { id: number; type: avro.Type }>();
  /** Per (kind, writer schema id): how to read that writer's bytes as our reader schema, or why we cannot. */
  private readonly readers = new Map<EventKind, Map<number, Reader | string>>();

  constructor(
    readonly client: Client,
    private readonly now: () => number = Date.now,
  ) {}

  /** Registers (or finds) our schema for each kind so `encode` can run synchronously. */
  async prepare(kinds: readonly EventKind[]): Promise<void> {
    for (const kind of kinds) {
      if (this.writers.has(kind)) continue;
      const id = await registerSchema(this.client, kind);
      this.writers.set(kind, { id, type: avroType(schemaText(kind)) });
    }
  }

  schemaId(kind: EventKind): number {
    const w = this.writers.get(kind);
    if (!w) throw new Error(`schema for ${kind} not prepared: call prepare() first`);
    return w.id;
  }

  encode<K extends EventKind>(kind: K, event: EventByKind[K]): Buffer {
    const w = this.writers.get(kind);
    if (!w) throw new Error(`schema for ${kind} not prepared: call prepare() first`);
    return frame(w.id, w.type.toBuffer(event));
  }

  /**
   * Decodes and validates; throws BadEventError with a reason for anything unusable. Times are judged against
   * `clock` when given (a log message's timestamp, so every replay of the message judges alike), else this serde's.
   */
  async decode<K extends EventKind>(kind: K, buf: Buffer | null, clock?: Clock): Promise<EventByKind[K]> {
    const id = schemaIdOf(buf);
    if (typeof id === 'string') throw new BadEventError(id);
    return this.read(kind, id, await this.reader(kind, id), buf as Buffer, clock ?? this.now());
  }

  /** Looks up the readers of the messages' schema ids (once per new id), so decodeResolved can run on them. */
  async resolve(kind: EventKind, messages: readonly { value: Buffer | null }[]): Promise<void> {
    const known = this.readers.get(kind);
    let last = -1;
    for (const m of messages) {
      const id = schemaIdOf(m.value);
      if (typeof id === 'string' || id === last) continue;
      last = id;
      if (!known?.has(id)) await this.reader(kind, id);
    }
  }

  /**
   * decode() for bytes whose schema id resolve() has looked up: synchronous. The event time may run ahead of `now`
   * (the message's timestamp) by at most `maxFutureMs`.
   */
  decodeResolved<K extends EventKind>(kind: K, buf: Buffer | null, now: number, maxFutureMs: number): EventByKind[K] {
    const id = schemaIdOf(buf);
    if (typeof id === 'string') throw new BadEventError(id);
    const reader = this.readers.get(kind)?.get(id);
    if (reader === undefined) throw new Error(`schema id ${id} not resolved: call resolve() first`);
    return this.read(kind, id, reader, buf as Buffer, { now, maxFutureMs });
  }

  /**
   * The bytes as their own (writer) schema reads them, with no reader schema and no validation: for looking at a
   * message the pipeline refused. Throws BadEventError saying why they do not decode.
   */
  async inspect(buf: Buffer | null): Promise<{ schemaId: number; schemaName: string; value: unknown }> {
    const id = schemaIdOf(buf);
    if (typeof id === 'string') throw new BadEventError(id);
    let schema: string;
    try {
      schema = (await this.client.getBySubjectAndId('', id)).schema;
    } catch (err) {
      const status = (err as { status?: number }).status;
      if (status !== 404 && !(err instanceof Error && /not found/i.test(err.message))) throw err;
      throw new BadEventError(`unknown schema id ${id}`);
    }
    const type = avroType(schema);
    try {
      return {
        schemaId: id,
        schemaName: String(type.name),
        value: type.fromBuffer((buf as Buffer).subarray(HEADER_LENGTH)),
      };
    } catch (err) {
      throw new BadEventError(`undecodable Avro body for schema id ${id}: ${(err as Error).message}`);
    }
  }

  private read<K extends EventKind>(kind: K, id: number, reader: Reader | string, buf: Buffer, clock: Clock | number) {
    if (typeof reader === 'string') throw new BadEventError(reader);
    let event: EventByKind[K];
    try {
      event = reader.type.fromBuffer(buf.subarray(HEADER_LENGTH), reader.resolver) as EventByKind[K];
    } catch (err) {
      throw new BadEventError(`undecodable Avro body for schema id ${id}: ${(err as Error).message}`);
    }
    const invalid = validateEvent(kind, event, clock);
    if (invalid) throw new BadEventError(`invalid ${kind}: ${invalid}`);
    return event;
  }

  private async reader(kind: EventKind, id: number): Promise<Reader | string> {
    let known = this.readers.get(kind);
    if (!known) {
      known = new Map();
      this.readers.set(kind, known);
    }
    const cached = known.get(id);
    if (cached) return cached;
    let result: Reader | string;
    try {
      // Ids are global in the wire format; look the id up registry-wide, then check it is the record we expect.
      const info = await this.client.getBySubjectAndId('', id);
      const readerType = avroType(schemaText(kind));
      const writerType = avroType(info.schema);
      if (writerType.name !== readerType.name) {
        result = `wrong schema: id ${id} is ${writerType.name}, topic expects ${readerType.name}`;
      } else {
        result = { type: readerType, resolver: readerType.createResolver(writerType) };
      }
    } catch (err) {
      const status = (err as { status?: number }).status;
      // A registry outage is not the message's fault: let it propagate so the caller retries instead of dead-lettering.
      if (status !== 404 && !(err instanceof Error && /not found/i.test(err.message))) throw err;
      result = `unknown schema id ${id}`;
    }
    known.set(id, result);
    return result;
  }
}
