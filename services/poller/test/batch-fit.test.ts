import { surelyTakenRecordBytes } from '@urs/bus';
import { createBatchFit } from '../src/batch-fit';

describe("a replica's batch fit", () => {
  it('should take a batch no larger than the floor of the topic’s own limit as fitting before any batch was taken', () => {
    const fit = createBatchFit();
    fit.takesUpTo(4_096);
    expect(fit.fits(1)).toBe(true);
    expect(fit.fits(4_096)).toBe(true);
    expect(fit.fits(4_097)).toBe(false);
  });

  it('should fit nothing before a batch was taken when the floor is 0 (the limit not read)', () => {
    const fit = createBatchFit();
    fit.takesUpTo(0);
    expect(fit.fits(1)).toBe(false);
    fit.taken(2_000);
    expect(fit.fits(2_000)).toBe(true);
    expect(fit.fits(2_001)).toBe(false);
  });

  it('should have the floor lowered by a refusal, and raised by a larger batch taken', () => {
    const fit = createBatchFit();
    fit.takesUpTo(4_096);
    fit.refused(3_000);
    expect(fit.fits(2_999)).toBe(true);
    expect(fit.fits(3_000)).toBe(false);
    fit.taken(5_000);
    expect(fit.fits(5_000)).toBe(true);
    // A refusal below the floor lowers the fit below it.
    const lowered = createBatchFit();
    lowered.takesUpTo(10_000);
    lowered.refused(500);
    expect(lowered.fits(500)).toBe(false);
  });
});

describe('the bytes a topic surely takes of a record', () => {
  it("should be half the topic's max.message.bytes, as MAX_SEND_BYTES is of the topics' 8 MiB", () => {
    expect(surelyTakenRecordBytes(8 * 1024 * 1024)).toBe(4 * 1024 * 1024);
    expect(surelyTakenRecordBytes(1_048_588)).toBe(524_294);
    expect(surelyTakenRecordBytes(8_192)).toBe(4_096);
  });

  it('should leave at least 1 KiB below a small limit, and be 0 at 1 KiB or less', () => {
    expect(surelyTakenRecordBytes(1_500)).toBe(476);
    expect(surelyTakenRecordBytes(2_048)).toBe(1_024);
    expect(surelyTakenRecordBytes(1_024)).toBe(0);
    expect(surelyTakenRecordBytes(100)).toBe(0);
  });
});
