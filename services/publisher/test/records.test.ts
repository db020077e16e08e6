import type { Contribution, ScoreBatch, ScoredDevice, SignalName } from '@urs/contracts';
import { scoredDevice } from '@urs/testkit';
import { batchStats, recordDigest } from '../src/records';

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
  const devices: ScoredDevice[] = [
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

describe('recordDigest', () => {
  const device = scoredDevice('d1', 10, 'Trustworthy', {
    computerDnsName: 'host-1.corp',
    lastIpAddress: '10.0.0.1',
    ipAddresses: [{ ipAddress: '10.0.0.1', macAddress: 'AA' }],
    machineTags: ['tier-1'],
    contributions: [
      { group: 'critical', signal: 'riskScore', value: 'Medium', points: 50, assumed: false },
      { group: 'operational', signal: 'inactivity', value: 2, points: 10, assumed: false },
    ],
  });

  it('should be the same for the same identity and explanation, whatever the score or the signal values', () => {
    expect(recordDigest(device)).toBe(recordDigest({ ...device, score: 90, band: 'High Risk' }));
    const laterSeen = {
      ...device,
      contributions: device.contributions.map((c) => (c.signal === 'inactivity' ? { ...c, value: 3 } : c)),
      signals: { inactivity: { value: 3, at: '2026-01-01T00:00:00Z' } },
    };
    expect(recordDigest(laterSeen)).toBe(recordDigest(device));
    expect(recordDigest(device)).toMatch(/^[0-9a-z]+$/);
  });

  it('should change with any field VMS enforces on', () => {
    const digests = [
      device,
      { ...device, lastIpAddress: '10.0.0.2' },
      { ...device, lastExternalIpAddress: '203.0.113.9' },
      { ...device, computerDnsName: 'host-2.corp' },
      { ...device, aadDeviceId: '00000000-0000-0000-0000-000000000009' },
      { ...device, ipAddresses: [{ ipAddress: '10.0.0.1', macAddress: 'AB' }] },
      { ...device, machineTags: ['tier-2'] },
      { ...device, machineTags: ['tier-1', 'x'] },
      { ...device, rbacGroupName: 'Servers' },
      // A value moved from one field to the next is another identity.
      { ...device, computerDnsName: null, aadDeviceId: 'host-1.corp' },
    ].map(recordDigest);
    expect(new Set(digests).size).toBe(digests.length);
  });

  it('should change with the explanation of the same score: the profile, the level or the points of an indicator, a missing signal', () => {
    const [first, second] = device.contributions as [Contribution, Contribution];
    const explained: ScoredDevice[] = [
      device,
      { ...device, profileHash: 'h2' },
      { ...device, contributions: [first, { ...second, points: 20 }] },
      {
        ...device,
        contributions: [
          { ...first, points: 60 },
          { ...second, points: 0 },
        ],
      },
      { ...device, contributions: [first] },
      // Another level worth the same points (a profile with exposureLevel Medium = High): another explanation.
      { ...device, contributions: [{ ...first, value: 'High' }, second] },
      { ...device, missing: ['inactivity'] },
      { ...device, missing: ['inactivity', 'criticalCves'] },
      { ...device, missing: ['criticalCves'] },
    ];
    const digests = explained.map(recordDigest);
    expect(new Set(digests).size).toBe(digests.length);
  });

  it('should change with why a missing signal is missing alone, whatever the order the reasons are kept in', () => {
    const missing: SignalName[] = ['inactivity', 'criticalCves'];
    const because = (missingReasons: ScoredDevice['missingReasons']) => ({
      ...device,
      missing,
      missingReasons,
    });
    const failed = because({ inactivity: 'NOT_REPORTED', criticalCves: 'FETCH_FAILED' });
    const digests = [
      // An older scorer's record, without reasons: the upgraded one is published once, to carry them.
      { ...device, missing },
      failed,
      because({ inactivity: 'NOT_REPORTED', criticalCves: 'NOT_IN_EXPORT_SNAPSHOT' }),
      because({ inactivity: 'NOT_REPORTED', criticalCves: 'EXCLUDED' }),
    ].map(recordDigest);
    expect(new Set(digests).size).toBe(digests.length);
    expect(recordDigest(because({ criticalCves: 'FETCH_FAILED', inactivity: 'NOT_REPORTED' }))).toBe(
      recordDigest(failed),
    );
  });

  it('should be what it was before reasons were kept for a device missing nothing: no republication of the fleet', () => {
    expect(recordDigest(device)).toBe('kd09j0b9x9');
  });
});
