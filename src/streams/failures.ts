// Which sink failures are worth retrying. A transient one (a server down, busy or timing out) passes; a permanent one
// is the server refusing this very write, which would fail the same way forever: the stream stops on it instead,
// its checkpoint where it was, so nothing is lost and a fixed setup resumes from there.

/** kafkajs protocol errors a retry cannot cure (its own `retriable` flag is false for them). */
function kafkaRefusal(err: { name?: string; retriable?: boolean; type?: string }): boolean {
  return err.name === 'KafkaJSProtocolError' && err.retriable === false;
}

/** Valkey replies that name the command or its data, not the server's state ("ERR max clients" is transient). */
const VALKEY_PERMANENT =
  /^(WRONGTYPE|NOPERM|ERR (user_script|Error running script|wrong number of arguments|unknown command))/;

/** ClickHouse error codes of a busy or unreachable server; any other code is the statement's own fault. */
const CLICKHOUSE_TRANSIENT = new Set([
  '3', // UNEXPECTED_END_OF_FILE
  '159', // TIMEOUT_EXCEEDED
  '164', // READONLY
  '202', // TOO_MANY_SIMULTANEOUS_QUERIES
  '203', // NO_FREE_CONNECTION
  '209', // SOCKET_TIMEOUT
  '210', // NETWORK_ERROR
  '241', // MEMORY_LIMIT_EXCEEDED
  '242', // TABLE_IS_READ_ONLY
  '252', // TOO_MANY_PARTS
  '319', // UNKNOWN_STATUS_OF_INSERT
  '394', // QUERY_WAS_CANCELLED
  '425', // SYSTEM_ERROR
  '999', // KEEPER_EXCEPTION
  '1000', // POCO_EXCEPTION
]);

/** Why retrying `err` cannot help, or undefined when it may (the default for anything unrecognised). */
export function permanentFailure(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { name?: string; message?: string; code?: unknown; cause?: unknown; retriable?: boolean };
  const message = String(e.message ?? '');
  if (kafkaRefusal(e)) return `Kafka refused the write: ${message}`;
  if (e.name === 'KafkaJSNonRetriableError' && e.cause && kafkaRefusal(e.cause as never))
    return `Kafka refused the write: ${(e.cause as Error).message}`;
  if (e.name === 'ReplyError' && VALKEY_PERMANENT.test(message)) return `Valkey refused the write: ${message}`;
  // By class name: the client's error keeps name "Error", and the embedded engine's comes from its own copy.
  if (isClickHouseError(err) && e.code !== undefined && !CLICKHOUSE_TRANSIENT.has(String(e.code)))
    return `ClickHouse refused the write (code ${String(e.code)}): ${message}`;
  return undefined;
}

function isClickHouseError(err: object): boolean {
  return (err as Error).name === 'ClickHouseError' || err.constructor?.name === 'ClickHouseError';
}

/** A kafkajs protocol error's type, whether thrown as is or wrapped (KafkaJSNonRetriableError's cause). */
function kafkaErrorType(err: unknown): string | undefined {
  const e = err as { type?: string; cause?: { type?: string } } | null;
  return e?.type ?? e?.cause?.type;
}

/** A produce request or record larger than the topic accepts: split or shrink it, do not send it again as is. */
export function tooLarge(err: unknown): boolean {
  const type = kafkaErrorType(err);
  return type === 'MESSAGE_TOO_LARGE' || type === 'RECORD_LIST_TOO_LARGE';
}

/**
 * An idempotent producer whose sequence no longer matches the broker's (after a request the broker refused): a new
 * producer session cures it, retrying on this one does not.
 */
export function producerOutOfStep(err: unknown): boolean {
  const type = kafkaErrorType(err);
  return type === 'OUT_OF_ORDER_SEQUENCE_NUMBER' || type === 'UNKNOWN_PRODUCER_ID' || type === 'INVALID_PRODUCER_EPOCH';
}

/** A sink failure the stream stops on: which sink, which batch, why. */
export class PermanentSinkError extends Error {
  constructor(
    readonly sink: string,
    readonly partition: string,
    reason: string,
  ) {
    super(`${sink} write for ${partition} failed permanently: ${reason}`);
    this.name = 'PermanentSinkError';
  }
}
