// Confluent wire format: magic byte 0, 4-byte big-endian schema id, then the Avro binary body.

export const MAGIC_BYTE = 0;
export const HEADER_LENGTH = 5;

export function frame(schemaId: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HEADER_LENGTH + body.length);
  out[0] = MAGIC_BYTE;
  out.writeUInt32BE(schemaId, 1);
  body.copy(out, HEADER_LENGTH);
  return out;
}

/** The schema id of a framed message, or an error string when the bytes are not in the wire format. */
export function schemaIdOf(buf: Buffer | null): number | string {
  if (!buf || buf.length < HEADER_LENGTH) return 'message shorter than the 5-byte wire-format header';
  if (buf[0] !== MAGIC_BYTE) return `unknown magic byte ${buf[0]}`;
  return buf.readUInt32BE(1);
}
