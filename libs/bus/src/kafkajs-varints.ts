import type { KafkaJsLongClass } from './kafkajs-encoder';

/**
 * The fields of a magic-2 record batch as KafkaJS writes them (varints, varlongs, nullable bytes, INT64s),
 * measured and written straight into a buffer at an offset: what the one-pass batch writer of
 * kafkajs-records.ts is made of. Each writer answers the offset after what it wrote.
 */

/** The largest magnitude whose zigzag encoding still fits a double exactly. */
export const EXACT_VARLONG = 2 ** 51;

/** Bytes of KafkaJS's `writeVarInt(value)`: the 32-bit zigzag of value as unsigned LEB128. */
export function varIntSize(value: number): number {
  let zigzag = (value << 1) ^ (value >> 31);
  let bytes = 1;
  while ((zigzag & 0xffffff80) !== 0) {
    bytes += 1;
    zigzag >>>= 7;
  }
  return bytes;
}

export function writeVarInt(out: Buffer, at: number, value: number): number {
  let zigzag = (value << 1) ^ (value >> 31);
  while ((zigzag & 0xffffff80) !== 0) {
    out[at++] = (zigzag & 0x7f) | 0x80;
    zigzag >>>= 7;
  }
  out[at++] = zigzag & 0x7f;
  return at;
}

/** The 64-bit zigzag of an integer of magnitude below EXACT_VARLONG, as a non-negative double. */
const zigzag64 = (value: number): number => (value >= 0 ? value * 2 : -value * 2 - 1);

export function varLongSize(value: number): number {
  let zigzag = zigzag64(value);
  let bytes = 1;
  while (zigzag >= 128) {
    bytes += 1;
    zigzag = Math.floor(zigzag / 128);
  }
  return bytes;
}

export function writeVarLong(out: Buffer, at: number, value: number): number {
  let zigzag = zigzag64(value);
  while (zigzag >= 128) {
    out[at++] = (zigzag % 128) | 0x80;
    zigzag = Math.floor(zigzag / 128);
  }
  out[at++] = zigzag;
  return at;
}

/** Length of a nullable bytes field, -1 for null (KafkaJS: `value == null`). */
export const bytesLength = (value: string | Buffer | null | undefined): number =>
  value == null ? -1 : typeof value === 'string' ? Buffer.byteLength(value, 'utf8') : value.length;

export const bytesFieldSize = (length: number): number => varIntSize(length) + Math.max(length, 0);

export function writeBytesField(
  out: Buffer,
  at: number,
  value: string | Buffer | null | undefined,
  length: number,
): number {
  at = writeVarInt(out, at, length);
  if (length <= 0 || value == null) return at;
  if (typeof value === 'string') out.write(value, at, length, 'utf8');
  else value.copy(out, at);
  return at + length;
}

export function writeInt64(out: Buffer, at: number, value: unknown, Long: KafkaJsLongClass): number {
  const long = Long.fromValue(value);
  out.writeInt32BE(long.getHighBits(), at);
  out.writeInt32BE(long.getLowBits(), at + 4);
  return at + 8;
}
