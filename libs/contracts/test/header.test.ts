import { cycleBatchHeader, type DeviceBatch } from '@urs/contracts';

const batch: DeviceBatch = {
  schemaVersion: 1,
  tenantId: 'acme',
  cycleId: 'c7',
  cycleStartedAt: '2026-01-01T10:00:00.000Z',
  batchIndex: 2,
  lastBatch: true,
  totalBatches: 3,
  totalDevices: 1200,
  vulnerabilityMode: 'bulk',
  cvssThreshold: 9,
  devices: [{ id: 'd1' }],
};

describe('cycleBatchHeader', () => {
  it('cycleBatchHeader should copy the header fields in order and leave the rest of the batch behind', () => {
    const header = cycleBatchHeader(batch);
    expect(header).toEqual({
      schemaVersion: 1,
      tenantId: 'acme',
      cycleId: 'c7',
      cycleStartedAt: '2026-01-01T10:00:00.000Z',
      batchIndex: 2,
      lastBatch: true,
      totalBatches: 3,
      totalDevices: 1200,
    });
    expect(Object.keys(header)).toEqual([
      'schemaVersion',
      'tenantId',
      'cycleId',
      'cycleStartedAt',
      'batchIndex',
      'lastBatch',
      'totalBatches',
      'totalDevices',
    ]);
  });

  it('cycleBatchHeader should leave out totals the batch does not have', () => {
    const { totalBatches: _batches, totalDevices: _devices, ...middle } = batch;
    const header = cycleBatchHeader({ ...middle, lastBatch: false });
    expect(header).not.toHaveProperty('totalBatches');
    expect(header).not.toHaveProperty('totalDevices');
    expect(header.lastBatch).toBe(false);
  });
});
