import { ConfigError } from '@urs/config';
import { vulnFetcherConfig } from '../src/config';

const KEY = Buffer.alloc(32, 7).toString('base64');

describe('vulnFetcherConfig', () => {
  it('vulnFetcherConfig should keep Microsoft quotas and 50,000-row bulk pages by default', () => {
    const config = vulnFetcherConfig({ URS_SECRET_KEY: KEY });
    expect(config.quotas).toBe('microsoft');
    expect(config.bulkPageSize).toBe(50_000);
    expect(config.slotHandOffMs).toBe(1_000);
  });

  it('vulnFetcherConfig should skip an unchanged export snapshot unless told not to, naming the variable of a bad value', () => {
    expect(vulnFetcherConfig({ URS_SECRET_KEY: KEY }).bulkSkipUnchanged).toBe(true);
    expect(
      vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_BULK_SKIP_UNCHANGED: 'false' }).bulkSkipUnchanged,
    ).toBe(false);
    expect(() => vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_BULK_SKIP_UNCHANGED: 'sometimes' })).toThrow(
      /URS_BULK_SKIP_UNCHANGED/,
    );
  });

  it('vulnFetcherConfig should read the slot hand-off time, 0 turning it off', () => {
    expect(vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_DEFENDER_SLOT_HANDOFF_MS: '0' }).slotHandOffMs).toBe(
      0,
    );
    expect(
      vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_DEFENDER_SLOT_HANDOFF_MS: '250' }).slotHandOffMs,
    ).toBe(250);
    expect(() => vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_DEFENDER_SLOT_HANDOFF_MS: '60000' })).toThrow(
      /URS_DEFENDER_SLOT_HANDOFF_MS must be ≤ 20000/,
    );
  });

  it('vulnFetcherConfig should let bulk export pages hold half the shared slots unless told otherwise, refusing a cap outside 1 to the slots', () => {
    expect(vulnFetcherConfig({ URS_SECRET_KEY: KEY }).bulkMaxSlots).toBe(5);
    expect(vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_DEFENDER_MAX_IN_FLIGHT: '3' }).bulkMaxSlots).toBe(2);
    expect(vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_DEFENDER_MAX_IN_FLIGHT: '1' }).bulkMaxSlots).toBe(1);
    expect(vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_BULK_MAX_SLOTS: '10' }).bulkMaxSlots).toBe(10);
    expect(() => vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_BULK_MAX_SLOTS: '0' })).toThrow(
      /URS_BULK_MAX_SLOTS must be ≥ 1/,
    );
    expect(() =>
      vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_BULK_MAX_SLOTS: '5', URS_DEFENDER_MAX_IN_FLIGHT: '4' }),
    ).toThrow(/URS_BULK_MAX_SLOTS must be ≤ URS_DEFENDER_MAX_IN_FLIGHT \(4\)/);
  });

  it('vulnFetcherConfig should bound the quota wait of a call to a few minutes unless told otherwise, naming the variable of a bad value', () => {
    expect(vulnFetcherConfig({ URS_SECRET_KEY: KEY }).maxQuotaWaitMs).toBe(180_000);
    expect(
      vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_VULN_MAX_QUOTA_WAIT_MS: '600000' }).maxQuotaWaitMs,
    ).toBe(600_000);
    expect(() => vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_VULN_MAX_QUOTA_WAIT_MS: '7200000' })).toThrow(
      /URS_VULN_MAX_QUOTA_WAIT_MS must be ≤ 3600000/,
    );
  });

  it('vulnFetcherConfig should bound the wait of a degraded tenant’s call for a place to a minute unless told otherwise, naming the variable of a bad value', () => {
    expect(vulnFetcherConfig({ URS_SECRET_KEY: KEY }).maxDegradedWaitMs).toBe(60_000);
    expect(
      vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_VULN_MAX_DEGRADED_WAIT_MS: '120000' }).maxDegradedWaitMs,
    ).toBe(120_000);
    expect(() =>
      vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_VULN_MAX_DEGRADED_WAIT_MS: '7200000' }),
    ).toThrow(/URS_VULN_MAX_DEGRADED_WAIT_MS must be ≤ 3600000/);
  });

  it('vulnFetcherConfig should read the quota switch and the bulk page size', () => {
    const config = vulnFetcherConfig({
      URS_SECRET_KEY: KEY,
      URS_DEFENDER_QUOTAS: 'off',
      URS_BULK_PAGE_SIZE: '200000',
    });
    expect(config.quotas).toBe('off');
    expect(config.bulkPageSize).toBe(200_000);
  });

  it('vulnFetcherConfig should refuse an unknown quota setting naming the variable', () => {
    expect(() => vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_DEFENDER_QUOTAS: 'none' })).toThrow(
      ConfigError,
    );
    expect(() => vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_DEFENDER_QUOTAS: 'none' })).toThrow(
      /URS_DEFENDER_QUOTAS must be one of microsoft, off/,
    );
  });

  it('vulnFetcherConfig should buffer 50 batches per partition unless told otherwise, and refuse none', () => {
    expect(vulnFetcherConfig({ URS_SECRET_KEY: KEY }).maxBufferedPerPartition).toBe(50);
    expect(
      vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_MAX_BUFFERED_PER_PARTITION: '7' }).maxBufferedPerPartition,
    ).toBe(7);
    expect(() => vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_MAX_BUFFERED_PER_PARTITION: '0' })).toThrow(
      /URS_MAX_BUFFERED_PER_PARTITION/,
    );
  });

  it('vulnFetcherConfig should read how long corrections wait for the earlier batches, 0 not waiting', () => {
    expect(vulnFetcherConfig({ URS_SECRET_KEY: KEY }).bulkCorrectionWaitMs).toBe(30_000);
    expect(
      vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_BULK_CORRECTION_WAIT_MS: '0' }).bulkCorrectionWaitMs,
    ).toBe(0);
    expect(() => vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_BULK_CORRECTION_WAIT_MS: '-1' })).toThrow(
      /URS_BULK_CORRECTION_WAIT_MS must be ≥ 0/,
    );
    expect(() => vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_BULK_CORRECTION_WAIT_MS: '600001' })).toThrow(
      /URS_BULK_CORRECTION_WAIT_MS must be ≤ 600000/,
    );
  });

  it('vulnFetcherConfig should refuse a bulk page larger than the API allows', () => {
    expect(() => vulnFetcherConfig({ URS_SECRET_KEY: KEY, URS_BULK_PAGE_SIZE: '200001' })).toThrow(
      /URS_BULK_PAGE_SIZE must be ≤ 200000/,
    );
  });
});
