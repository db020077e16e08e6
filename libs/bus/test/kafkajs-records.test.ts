import { spawnSync } from 'node:child_process';
import {
  createRecordBatchEncoder,
  describeRecord,
  referenceLargeParts,
  type KafkaJsEncoder,
  type KafkaJsEncoderClass,
  type KafkaJsLongClass,
} from '@urs/bus';

/* eslint-disable @typescript-eslint/no-require-imports */
type RecordFields = Parameters<typeof describeRecord>[0];
type RecordBatchArgs = Parameters<ReturnType<typeof createRecordBatchEncoder>>[0];
const Encoder = require('kafkajs/src/protocol/encoder.js') as KafkaJsEncoderClass;
const Long = require('kafkajs/src/utils/long.js') as KafkaJsLongClass & { fromInt(value: number): unknown };
const kafkaJsRecord = require('kafkajs/src/protocol/recordBatch/record/v0/index.js') as (
  fields: RecordFields,
) => KafkaJsEncoder;
const { RecordBatch: kafkaJsRecordBatch } = require('kafkajs/src/protocol/recordBatch/v0/index.js') as {
  RecordBatch: (args: RecordBatchArgs) => Promise<KafkaJsEncoder>;
};
/* eslint-enable @typescript-eslint/no-require-imports */

/** A small deterministic generator, so a failing case can be run again. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

const text = (length: number, next: () => number): string =>
  Array.from({ length }, () => 'aé€😀{}"\\z'[Math.floor(next() * 9)]).join('');

/** The bytes KafkaJS itself writes for a batch of these records. */
async function byKafkaJs(args: RecordBatchArgs, records: RecordFields[]): Promise<Buffer> {
  const encoder = await kafkaJsRecordBatch({ ...args, records: records.map(kafkaJsRecord) });
  return Buffer.from(encoder.buffer);
}

async function byOnePass(args: RecordBatchArgs, records: RecordFields[]): Promise<Buffer> {
  const encode = createRecordBatchEncoder({ Encoder, Long, kafkaJsRecord, kafkaJsRecordBatch });
  const encoder = await encode({ ...args, records: records.map(describeRecord) });
  return Buffer.from(encoder.buffer);
}

const batch: RecordBatchArgs = {
  firstTimestamp: 1_733_000_000_000,
  maxTimestamp: 1_733_000_000_500,
  producerId: Long.fromInt(-1),
  producerEpoch: 0,
  firstSequence: 0,
  transactional: false,
};

describe('createRecordBatchEncoder', () => {
  it('should write the bytes KafkaJS writes, for records of every shape a producer sends', async () => {
    const next = random(7);
    const lengths = [0, 1, 63, 64, 127, 128, 8191, 8192, 70_000];
    const records: RecordFields[] = [];
    for (let index = 0; index < 300; index++) {
      const length = lengths[index % lengths.length] as number;
      const value = text(length, next);
      records.push({
        key: index % 7 === 0 ? null : index % 3 === 0 ? Buffer.from(`tenant/${index}`) : `tenant/é${index}`,
        value: index % 11 === 0 ? null : index % 2 === 0 ? Buffer.from(value) : value,
        headers:
          index % 5 === 0
            ? { contract: 'urs/score-batch', 'x-many': ['a', Buffer.from('bé')], empty: '' }
            : index % 5 === 1
              ? undefined
              : {},
        offsetDelta: index,
        timestampDelta: [0, 1, -1, 500, -70_000, 2 ** 40, -(2 ** 40)][index % 7] as number,
      });
    }
    const ours = await byOnePass({ ...batch, lastOffsetDelta: records.length - 1 }, records);
    expect(ours.equals(await byKafkaJs({ ...batch, lastOffsetDelta: records.length - 1 }, records))).toBe(
      true,
    );
  });

  it('should write the same batch header as KafkaJS: transactions, producer ids, timestamps given as text', async () => {
    const args: RecordBatchArgs = {
      firstTimestamp: '1733000000000',
      maxTimestamp: '1733000009999',
      producerId: Long.fromInt(4242),
      producerEpoch: 3,
      firstSequence: 17,
      transactional: true,
      partitionLeaderEpoch: 5,
      lastOffsetDelta: 1,
    };
    const records = [
      { key: 'a', value: 'b' },
      { value: 'c', offsetDelta: 1 },
    ];
    expect((await byOnePass(args, records)).equals(await byKafkaJs(args, records))).toBe(true);
    const empty = { ...batch, lastOffsetDelta: -1 };
    expect((await byOnePass(empty, [])).equals(await byKafkaJs(empty, []))).toBe(true);
  });

  it("should leave compressed batches and records it does not take to KafkaJS's encoders", async () => {
    const compressed = { ...batch, compression: 1, lastOffsetDelta: 1 };
    const records = [
      { key: 'k', value: 'x'.repeat(5000) },
      { key: 'k', value: 'y', offsetDelta: 1 },
    ];
    expect((await byOnePass(compressed, records)).equals(await byKafkaJs(compressed, records))).toBe(true);
    // What KafkaJS refuses (a fractional timestamp delta, a header value neither text nor bytes), it
    // still refuses, with its own error.
    for (const refused of [
      [{ key: 'k', value: 'v', timestampDelta: 1.5 }],
      [{ key: 'k', value: 'v', headers: { n: 5 } }],
    ]) {
      // (Node's own errors come from another realm than Jest's: compared by message.)
      const theirs = (await byKafkaJs(batch, refused).then(
        () => 'encoded',
        (error: Error) => error.message,
      )) as string;
      expect(theirs).not.toBe('encoded');
      await expect(byOnePass(batch, refused)).rejects.toThrow(theirs);
    }
  });
});

describe('referenceLargeParts', () => {
  /** Two copies of KafkaJS's Encoder: as it ships, and patched. */
  function encoders(): { Stock: KafkaJsEncoderClass; Parted: KafkaJsEncoderClass } {
    let Stock: KafkaJsEncoderClass | undefined;
    let Parted: KafkaJsEncoderClass | undefined;
    jest.isolateModules(() => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      Stock = require('kafkajs/src/protocol/encoder.js') as KafkaJsEncoderClass;
    });
    jest.isolateModules(() => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      Parted = require('kafkajs/src/protocol/encoder.js') as KafkaJsEncoderClass;
    });
    expect(referenceLargeParts(Parted as KafkaJsEncoderClass)).toBe(true);
    expect(referenceLargeParts(Parted as KafkaJsEncoderClass)).toBe(false);
    return { Stock: Stock as KafkaJsEncoderClass, Parted: Parted as KafkaJsEncoderClass };
  }

  type Writer = KafkaJsEncoder & Record<string, (...args: unknown[]) => KafkaJsEncoder>;

  it('should give the bytes and sizes of the encoder as it ships, whatever is written in whatever order', () => {
    const { Stock, Parted } = encoders();
    const next = random(11);
    for (let trial = 0; trial < 40; trial++) {
      const build = (Class: KafkaJsEncoderClass, seed: number, depth: number): KafkaJsEncoder => {
        const draw = random(seed);
        const encoder = new Class() as Writer;
        const steps = 1 + Math.floor(draw() * 12);
        for (let step = 0; step < steps; step++) {
          const size = [0, 3, 100, 4095, 4096, 20_000][Math.floor(draw() * 6)] as number;
          const bytes = Buffer.alloc(size, Math.floor(draw() * 256));
          switch (Math.floor(draw() * 9)) {
            case 0:
              encoder.writeInt32(Math.floor(draw() * 1e9));
              break;
            case 1:
              encoder.writeVarIntBytes!(bytes);
              break;
            case 2:
              encoder.writeBytes(bytes);
              break;
            case 3:
              encoder.writeString!(text(Math.floor(draw() * 50), draw));
              break;
            case 4:
              if (depth < 3) encoder.writeEncoder(build(Class, Math.floor(draw() * 1e9), depth + 1));
              break;
            case 5:
              if (depth < 3) {
                const nested = [0, 1, 2].map(() => build(Class, Math.floor(draw() * 1e9), depth + 1));
                encoder.writeArray!(nested);
              }
              break;
            case 6:
              // Reading the bytes midway, as KafkaJS does to checksum a batch body, then writing on.
              void encoder.buffer;
              break;
            case 7:
              encoder.writeVarLong!(Math.floor(draw() * 2 ** 40));
              break;
            default:
              encoder.writeBytes(text(Math.floor(draw() * 9000), draw));
          }
        }
        return encoder;
      };
      const seed = Math.floor(next() * 1e9);
      const stock = build(Stock, seed, 0);
      const parted = build(Parted, seed, 0);
      expect(parted.size()).toBe(stock.size());
      expect(Buffer.compare(parted.buffer, stock.buffer)).toBe(0);
      expect(parted.size()).toBe(stock.size());
    }
  });

  it('should reference a large part instead of copying it, and join the parts once when the bytes are read', () => {
    const { Parted } = encoders();
    const large = Buffer.alloc(10_000, 1);
    const encoder = new Parted().writeInt32(7).writeBytes(large) as KafkaJsEncoder & { parts?: Buffer[] };
    expect(encoder.parts?.[1]).toBe(large);
    expect(encoder.size()).toBe(4 + 4 + 10_000);
    const bytes = encoder.buffer;
    expect(encoder.parts).toBeUndefined();
    expect(encoder.buffer.buffer).toBe(bytes.buffer);
    expect(bytes.readInt32BE(0)).toBe(7);
    expect(bytes.readInt32BE(4)).toBe(10_000);
    expect(bytes.subarray(8).equals(large)).toBe(true);
  });
});

describe('useFastRecordBatches', () => {
  // The install swaps modules in Node's module cache, which Jest's registry does not share: checked in
  // plain Node processes, one with KafkaJS as it ships and one with the fixes, encoding the same requests.
  const encodeRequests = `
    const produce = require('kafkajs/src/protocol/requests/produce/v3/request');
    const createRequest = require('kafkajs/src/protocol/request');
    const messages = Array.from({ length: 40 }, (_, i) => ({
      key: i % 4 === 0 ? null : 'tenant/' + i,
      value: i % 3 === 0 ? Buffer.alloc(i * 700, i) : 'é'.repeat(i * 300),
      headers: i % 5 === 0 ? { contract: 'urs/vms-risk-score' } : {},
      timestamp: 1733000000000 + i,
    }));
    const request = produce({
      acks: -1,
      timeout: 30000,
      compression: 0,
      topicData: [
        { topic: 'a', partitions: [{ partition: 0, firstSequence: 0, messages }, { partition: 3, firstSequence: 0, messages: messages.slice(5) }] },
        { topic: 'b', partitions: [{ partition: 1, firstSequence: 0, messages: [{ key: 'k', value: Buffer.alloc(900000, 7), timestamp: 1733000000000 }] }] },
      ],
    });
    createRequest({ correlationId: 9, clientId: 'test', request }).then((payload) => {
      const bytes = payload.buffer;
      console.log(JSON.stringify({ fixes, size: bytes.length, hash: require('node:crypto').createHash('sha256').update(bytes).digest('hex') }));
    });`;

  function run(prelude: string): { fixes: unknown; size: number; hash: string } {
    const result = spawnSync(process.execPath, ['-e', `${prelude}\n${encodeRequests}`], { encoding: 'utf8' });
    expect(result.stderr).toBe('');
    return JSON.parse(result.stdout) as { fixes: unknown; size: number; hash: string };
  }

  it('should make KafkaJS encode produce requests byte for byte as before, before and only before it loads them', () => {
    const stock = run(`const fixes = null;`);
    const fixed = run(`
      const bus = require('@urs/bus');
      const fixes = [bus.applyKafkaJsFixes(), bus.useFastRecordBatches()];`);
    expect(fixed.fixes).toEqual([
      { requestQueue: true, memberIds: true, connections: true, crc32c: true, recordBatches: true },
      true,
    ]);
    expect(fixed.size).toBe(stock.size);
    expect(fixed.hash).toBe(stock.hash);

    const late = spawnSync(
      process.execPath,
      [
        '-e',
        `require('kafkajs/src/protocol/requests/produce/v3/request');
         console.log(JSON.stringify(require('@urs/bus').useFastRecordBatches()));`,
      ],
      { encoding: 'utf8' },
    );
    expect(JSON.parse(late.stdout)).toBe(false);
  });
});
