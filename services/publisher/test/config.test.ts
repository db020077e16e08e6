import { publisherConfig } from '../src/config';

describe('publisherConfig', () => {
  test('publisherConfig should brake tombstones by default: half of a fleet at once, at least 10 devices, held 24 cycles', () => {
    expect(publisherConfig({})).toMatchObject({
      tombstoneAfterCycles: 3,
      tombstoneMaxSharePercent: 50,
      tombstoneHoldMinDevices: 10,
      tombstoneHoldCycles: 24,
    });
  });

  test('publisherConfig should refuse a hold no longer than the absence that tombstones, naming both settings', () => {
    expect(() =>
      publisherConfig({ URS_TOMBSTONE_AFTER_CYCLES: '6', URS_TOMBSTONE_HOLD_CYCLES: '6' }),
    ).toThrow(/URS_TOMBSTONE_HOLD_CYCLES must be more than URS_TOMBSTONE_AFTER_CYCLES \(6; got 6\)/);
    expect(
      publisherConfig({ URS_TOMBSTONE_AFTER_CYCLES: '6', URS_TOMBSTONE_HOLD_CYCLES: '7' }),
    ).toMatchObject({
      tombstoneHoldCycles: 7,
    });
  });

  test('publisherConfig should refuse a share outside 1–100', () => {
    expect(() => publisherConfig({ URS_TOMBSTONE_MAX_SHARE_PERCENT: '0' })).toThrow(
      /URS_TOMBSTONE_MAX_SHARE_PERCENT/,
    );
    expect(() => publisherConfig({ URS_TOMBSTONE_MAX_SHARE_PERCENT: '101' })).toThrow(
      /URS_TOMBSTONE_MAX_SHARE_PERCENT/,
    );
  });
});
