/**
 * KafkaJS's `Encoder` made to keep large parts by reference instead of copying them: the first of the two
 * changes `useFastRecordBatches` (kafkajs-records.ts) installs, and why, is described there.
 */

/** Parts at least this long are referenced by an encoder, not copied into it. */
const REFERENCE_FROM_BYTES = 4096;

/** The members of KafkaJS's `Encoder` these modules rely on. */
export interface KafkaJsEncoder {
  buf: Buffer;
  offset: number;
  readonly buffer: Buffer;
  size(): number;
  writeBufferInternal(buffer: Buffer): void;
  writeInt32(value: number): KafkaJsEncoder;
  writeEncoder(value: KafkaJsEncoder): KafkaJsEncoder;
  writeEncoderArray(values: KafkaJsEncoder[]): KafkaJsEncoder;
  writeBytes(value: unknown): KafkaJsEncoder;
}

export interface KafkaJsEncoderClass {
  new (initialSize?: number): KafkaJsEncoder;
  prototype: KafkaJsEncoder;
}

/** KafkaJS's 64-bit integer (`utils/long`): what it writes an INT64 from. */
export interface KafkaJsLongClass {
  fromValue(value: unknown): { getHighBits(): number; getLowBits(): number };
}

/** What an encoder holds besides its buffer once it references parts. */
interface Parted extends KafkaJsEncoder {
  parts?: Buffer[];
  partsLength?: number;
}

const PATCHED = Symbol.for('urs.kafkajs.referenceLargeParts');

/**
 * Makes KafkaJS's `Encoder` keep parts of `REFERENCE_FROM_BYTES` or more by reference. Its bytes are the
 * parts, in order, then what was written after the last one (`buf` up to `offset`, as before); `size()`
 * counts them all and `buffer` joins them into one buffer the first time it is read (later writes go on
 * after it). Every other method writes at `offset` into `buf`, as before. Idempotent; answers whether this
 * call patched the class.
 */
export function referenceLargeParts(Encoder: KafkaJsEncoderClass): boolean {
  const proto = Encoder.prototype as Parted & { [PATCHED]?: true };
  if (proto[PATCHED]) return false;
  const copy = proto.writeBufferInternal;
  const writeBytes = proto.writeBytes;

  /** Ends the bytes written so far as a part; later writes go on in the rest of the same buffer. */
  const detach = (encoder: Parted): Buffer[] => {
    encoder.parts ??= [];
    encoder.partsLength ??= 0;
    if (encoder.offset > 0) {
      encoder.parts.push(encoder.buf.subarray(0, encoder.offset));
      encoder.partsLength += encoder.offset;
      encoder.buf = encoder.buf.subarray(encoder.offset);
      encoder.offset = 0;
    }
    return encoder.parts;
  };
  const append = (encoder: Parted, part: Buffer): void => {
    detach(encoder).push(part);
    encoder.partsLength = (encoder.partsLength ?? 0) + part.length;
  };

  Object.defineProperties(proto, {
    [PATCHED]: { value: true },
    size: {
      configurable: true,
      writable: true,
      value(this: Parted): number {
        return (this.partsLength ?? 0) + this.offset;
      },
    },
    buffer: {
      configurable: true,
      get(this: Parted): Buffer {
        if (this.parts === undefined) return this.buf.subarray(0, this.offset);
        const tail = this.buf.subarray(0, this.offset);
        const whole = Buffer.concat([...this.parts, tail], (this.partsLength ?? 0) + this.offset);
        this.parts = undefined;
        this.partsLength = undefined;
        this.buf = whole;
        this.offset = whole.length;
        return whole;
      },
    },
    writeBufferInternal: {
      configurable: true,
      writable: true,
      value(this: Parted, buffer: Buffer): void {
        if (buffer.length >= REFERENCE_FROM_BYTES) append(this, buffer);
        else copy.call(this, buffer);
      },
    },
    writeBytes: {
      configurable: true,
      writable: true,
      value(this: Parted, value: unknown): KafkaJsEncoder {
        // KafkaJS reserves room for the whole value first; a referenced value needs room for its length only.
        if (!Buffer.isBuffer(value) || value.length < REFERENCE_FROM_BYTES)
          return writeBytes.call(this, value);
        this.writeInt32(value.length);
        append(this, value);
        return this;
      },
    },
    writeEncoder: {
      configurable: true,
      writable: true,
      value(this: Parted, value: Parted): KafkaJsEncoder {
        if (value == null || !Buffer.isBuffer(value.buf)) {
          throw new Error('value should be an instance of Encoder');
        }
        if (value.parts === undefined && value.offset < REFERENCE_FROM_BYTES) {
          copy.call(this, value.buf.subarray(0, value.offset));
          return this;
        }
        for (const part of value.parts ?? []) append(this, part);
        if (value.offset > 0) append(this, value.buf.subarray(0, value.offset));
        return this;
      },
    },
    writeEncoderArray: {
      configurable: true,
      writable: true,
      value(this: Parted, values: Parted[]): KafkaJsEncoder {
        if (!Array.isArray(values) || values.some((v) => v == null || !Buffer.isBuffer(v.buf))) {
          throw new Error('all values should be an instance of Encoder[]');
        }
        for (const value of values) this.writeEncoder(value);
        return this;
      },
    },
  });
  return true;
}
