import fc from 'fast-check';
import { PartitionOffsets, committableOffset } from '../src/watermark';

describe('committableOffset', () => {
  it('should be undefined when nothing was accepted', () => {
    expect(committableOffset([], undefined)).toBeUndefined();
  });

  it('should be the smallest unfinished offset while one is unfinished', () => {
    expect(committableOffset([4n, 7n], 10n)).toBe(4n);
  });

  it('should be the end when every accepted message is finished', () => {
    expect(committableOffset([], 10n)).toBe(10n);
  });
});

describe('PartitionOffsets', () => {
  it('should stay at a slow message while later messages of other keys finish', () => {
    const offsets = new PartitionOffsets();
    for (const offset of [0n, 1n, 2n, 3n, 4n]) offsets.accept(offset);
    offsets.finish(0n);
    offsets.finish(2n);
    offsets.finish(3n);
    offsets.finish(4n);
    expect(offsets.watermark()).toBe(1n);
    expect(offsets.unfinishedCount).toBe(1);
    offsets.finish(1n);
    expect(offsets.watermark()).toBe(5n);
    expect(offsets.unfinishedCount).toBe(0);
  });

  it('should step over gaps in offsets (compaction) and a control record after the batch', () => {
    const offsets = new PartitionOffsets();
    offsets.accept(10n);
    offsets.accept(14n);
    expect(offsets.watermark()).toBe(10n);
    offsets.finish(10n);
    expect(offsets.watermark()).toBe(14n);
    offsets.advance(16n);
    offsets.finish(14n);
    expect(offsets.watermark()).toBe(16n);
  });

  it('should recognise offsets already accepted and refuse to accept them twice', () => {
    const offsets = new PartitionOffsets();
    expect(offsets.isAccepted(0n)).toBe(false);
    offsets.accept(3n);
    offsets.accept(5n);
    expect(offsets.isAccepted(4n)).toBe(true);
    expect(offsets.isAccepted(5n)).toBe(true);
    expect(offsets.isAccepted(6n)).toBe(false);
    expect(() => offsets.accept(5n)).toThrow(RangeError);
    expect(offsets.unfinishedCount).toBe(2);
  });

  it('should ignore a finish of an offset that is not unfinished, and never move the end back', () => {
    const offsets = new PartitionOffsets();
    offsets.accept(1n);
    offsets.finish(7n);
    offsets.finish(1n);
    offsets.finish(1n);
    offsets.advance(0n);
    expect(offsets.watermark()).toBe(2n);
  });

  it('should never pass an unfinished message and reach the end once all are finished, in any finishing order', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 40 }),
        fc.func(fc.integer()),
        (gaps, rank) => {
          const offsets = new PartitionOffsets();
          const accepted: bigint[] = [];
          let next = 0n;
          for (const gap of gaps) {
            next += BigInt(gap);
            offsets.accept(next);
            accepted.push(next);
          }
          const order = [...accepted].sort((a, b) => rank(Number(a)) - rank(Number(b)) || Number(a - b));
          const finished = new Set<bigint>();
          let previous = offsets.watermark() as bigint;
          for (const offset of order) {
            offsets.finish(offset);
            finished.add(offset);
            const watermark = offsets.watermark() as bigint;
            expect(watermark).toBeGreaterThanOrEqual(previous);
            // Everything below the watermark is finished; the watermark itself is not, unless it is the end.
            for (const a of accepted) if (a < watermark) expect(finished.has(a)).toBe(true);
            if (watermark !== next + 1n) expect(finished.has(watermark)).toBe(false);
            previous = watermark;
          }
          expect(offsets.watermark()).toBe(next + 1n);
        },
      ),
    );
  });
});
