import type { ScoreBatch, ScoredDevice } from '@urs/contracts';
import { scoredDevice } from '@urs/testkit';
import { batchStats } from '../src/records';

const batch = (devices: ScoredDevice[], replaces?: ScoreBatch['replaces']): ScoreBatch => ({
  schemaVersion: 1,
  tenantId: 't1',
  cycleId: 'c1',
  cycleStartedAt: '2026-01-01T10:00:00.000Z',
  batchIndex: 2,
  lastBatch: false,
  collectedAt: '2026-01-01T10:00:30.000Z',
  scoredAt: '2026-01-01T10:00:31.000Z',
  devices,
  ...(replaces ? { replaces } : {}),
});

describe('batchStats', () => {
  const devices = [
    scoredDevice('d1', 10, 'Trustworthy'),
    { ...scoredDevice('d2', 85, 'High Risk'), missing: ['riskScore'] },
    scoredDevice('d3', 90, 'High Risk'),
  ];

  it('should count a batch of devices by band', () => {
    expect(batchStats(batch(devices), 2)).toMatchObject({
      devices: 3,
      bands: { Trustworthy: 1, 'Low Risk': 0, 'Moderate Risk': 0, Suspicious: 0, 'High Risk': 2 },
      incomplete: 1,
      changed: 2,
    });
  });

  it('should move the devices of a correction between bands instead of counting them again', () => {
    const replaces = { bands: { 'High Risk': 1, 'Moderate Risk': 2 }, incomplete: 2 };
    expect(batchStats(batch(devices, replaces), 3)).toMatchObject({
      devices: 0,
      bands: { Trustworthy: 1, 'Low Risk': 0, 'Moderate Risk': -2, Suspicious: 0, 'High Risk': 1 },
      incomplete: -1,
      changed: 3,
    });
  });
});
