import { Partitioners, type PartitionMetadata } from 'kafkajs';
import { JavaCompatiblePartitioner, murmur2 } from '@urs/bus';

// KafkaJS's own murmur2 (64-bit Long arithmetic), the reference the fast one must match bit for bit.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const kafkajsMurmur2 = require('kafkajs/src/producer/partitioners/default/murmur2') as (
  key: Buffer | string,
) => number;

/** Deterministic pseudo-random keys: ASCII ids, every length 0–70, non-ASCII and long keys. */
function keys(): string[] {
  let seed = 42;
  const next = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  const out = ['', 'a', 'ab', 'abc', 'tenant-1/0123456789abcdef0123456789abcdef01234567'];
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789-/_.ABCDEF';
  for (let length = 0; length <= 70; length++) {
    for (let n = 0; n < 20; n++) {
      let key = '';
      for (let i = 0; i < length; i++) key += alphabet[next() % alphabet.length];
      out.push(key);
    }
  }
  out.push('tenant-é/machine', 'Zürich/💻-device', 'x'.repeat(300), 'ü'.repeat(200));
  return out;
}

const partitions = (count: number, leaderless: number[] = []): PartitionMetadata[] =>
  Array.from({ length: count }, (_, partitionId) => ({
    partitionId,
    leader: leaderless.includes(partitionId) ? -1 : 1,
    partitionErrorCode: 0,
    replicas: [1],
    isr: [1],
  }));

describe('murmur2', () => {
  it("should give KafkaJS's (the Java client's) murmur2 for every key, as a string or as bytes", () => {
    for (const key of keys()) {
      const expected = kafkajsMurmur2(key);
      expect([key, murmur2(key)]).toEqual([key, expected]);
      expect([key, murmur2(Buffer.from(key, 'utf8'))]).toEqual([key, expected]);
    }
  });

  it('should match the Java client on known vectors', () => {
    // From Kafka's UtilsTest.testMurmur2.
    expect(murmur2('21')).toBe(-973932308);
    expect(murmur2('foobar')).toBe(-790332482);
    expect(murmur2('a-little-bit-long-string')).toBe(-985981536);
    expect(murmur2('a-little-bit-longer-string')).toBe(-1486304829);
    expect(murmur2('lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8')).toBe(-58897971);
  });
});

describe('JavaCompatiblePartitioner', () => {
  it("should put every keyed record where KafkaJS's DefaultPartitioner puts it", () => {
    const ours = JavaCompatiblePartitioner();
    const theirs = Partitioners.DefaultPartitioner();
    for (const count of [1, 3, 6, 12]) {
      for (const key of keys()) {
        const args = { topic: 't', partitionMetadata: partitions(count, [1]), message: { key, value: 'v' } };
        expect([key, count, ours(args)]).toEqual([key, count, theirs(args)]);
      }
    }
  });

  it('should keep an explicit partition', () => {
    const partition = JavaCompatiblePartitioner()({
      topic: 't',
      partitionMetadata: partitions(6),
      message: { key: 'k', value: 'v', partition: 4 },
    });
    expect(partition).toBe(4);
  });

  it('should spread records without a key round-robin over the partitions that have a leader', () => {
    const partitioner = JavaCompatiblePartitioner();
    const chosen = Array.from({ length: 9 }, () =>
      partitioner({ topic: 't', partitionMetadata: partitions(4, [2]), message: { value: 'v' } }),
    );
    const counts = [0, 1, 2, 3].map((id) => chosen.filter((partition) => partition === id).length);
    expect(counts).toEqual([3, 3, 0, 3]);
  });
});
