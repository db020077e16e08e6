import { spawnSync } from 'node:child_process';
import { crc32c } from '@urs/bus';

// KafkaJS's own byte-at-a-time CRC-32C: the reference.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const kafkajsCrc32c = require('kafkajs/src/protocol/recordBatch/crc32C/crc32C.js') as (
  bytes: Buffer,
) => number;

function bytes(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let state = seed;
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    out[i] = state >>> 24;
  }
  return out;
}

describe('crc32c', () => {
  it('should give the standard check value and the RFC 3720 test vectors', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(32, 0x00))).toBe(0x8a9136aa);
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i)))).toBe(0x46dd794e);
    expect(crc32c(Buffer.alloc(0))).toBe(0);
  });

  it("should equal KafkaJS's CRC-32C for every length 0–100 and for large buffers, at any offset", () => {
    for (let length = 0; length <= 100; length++) {
      const data = bytes(length, length);
      expect([length, crc32c(data)]).toEqual([length, kafkajsCrc32c(data)]);
    }
    const large = bytes(1_000_003, 7);
    expect(crc32c(large)).toBe(kafkajsCrc32c(large));
    // A view that starts inside a larger buffer (KafkaJS checksums slices of its encoder's buffer).
    const view = large.subarray(13, 70_013);
    expect(crc32c(view)).toBe(kafkajsCrc32c(view));
  });
});

describe('useFastCrc32c', () => {
  // Jest keeps a module registry of its own, so the install is checked in a plain Node process.
  it("should make KafkaJS's record batch encoder checksum with crc32c, before and only before it loads", () => {
    const script = `
      const bus = require('@urs/bus');
      const installed = bus.useFastCrc32c();
      const { RecordBatch } = require('kafkajs/src/protocol/recordBatch/v0');
      const encoderUsed = require('kafkajs/src/protocol/recordBatch/crc32C') === bus.crc32c;
      RecordBatch({ records: [], firstTimestamp: 1, maxTimestamp: 1 }).then((encoder) => {
        // firstOffset int64, length int32, leader epoch int32, magic int8, crc uint32, then the checksummed body.
        const bytes = encoder.buffer;
        const crc = bytes.readUInt32BE(17);
        const body = bytes.subarray(21);
        console.log(JSON.stringify({ installed, encoderUsed, again: bus.useFastCrc32c(), matches: crc === bus.crc32c(body) }));
      });`;
    const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(JSON.parse(run.stdout)).toEqual({
      installed: true,
      encoderUsed: true,
      again: true,
      matches: true,
    });

    const late = `
      require('kafkajs/src/protocol/recordBatch/v0');
      console.log(JSON.stringify(require('@urs/bus').useFastCrc32c()));`;
    expect(JSON.parse(spawnSync(process.execPath, ['-e', late], { encoding: 'utf8' }).stdout)).toBe(false);
  });
});
