import {
  MISSING_REASONS,
  checkMessage,
  missingReasonsOf,
  validateMessage,
  vmsRecord,
  type ScoredDevice,
} from '@urs/contracts';
import { scoreBatchOf, scoredDevice } from '@urs/testkit';

/** A device scored without its vulnerabilities and its exposure level, with why. */
const incomplete: ScoredDevice = scoredDevice('d1', 30, 'Low Risk', {
  missing: ['exposureLevel', 'criticalCves'],
  missingReasons: { exposureLevel: 'NOT_REPORTED', criticalCves: 'FETCH_FAILED' },
});
const record = (device: ScoredDevice) =>
  vmsRecord('acme', 'c1', '2026-01-21T10:00:31.000Z', device).value as unknown as Record<string, unknown>;
const scoreBatch = (device: ScoredDevice) => scoreBatchOf([device]);

describe('missingReasons on a scored device and its vms.risk-scores record', () => {
  it('should be accepted on a score batch and a VMS record, and optional (an older record has none)', () => {
    expect(validateMessage('urs/score-batch', scoreBatch(incomplete)).devices[0]?.missingReasons).toEqual(
      incomplete.missingReasons,
    );
    expect(validateMessage('urs/vms-risk-score', record(incomplete)).missingReasons).toEqual(
      incomplete.missingReasons,
    );
    const { missingReasons: _, ...older } = incomplete;
    expect(validateMessage('urs/vms-risk-score', record(older)).missingReasons).toBeUndefined();
  });

  it("should take CVSS_THRESHOLD_CHANGED for criticalCves: a count made at another threshold than the scoring profile's", () => {
    const uncounted = scoredDevice('d1', 30, 'Low Risk', {
      missing: ['criticalCves'],
      missingReasons: { criticalCves: 'CVSS_THRESHOLD_CHANGED' },
    });
    expect(checkMessage('urs/score-batch', scoreBatch(uncounted))).toEqual([]);
    expect(checkMessage('urs/vms-risk-score', record(uncounted))).toEqual([]);
  });

  it('should refuse anything but a code of the list: never an error text', () => {
    const withText = {
      ...incomplete,
      missingReasons: {
        criticalCves: 'Microsoft Defender failed: 503 from api.securitycenter.microsoft.com',
      },
    } as unknown as ScoredDevice;
    expect(checkMessage('urs/vms-risk-score', record(withText))).toEqual([
      { field: 'missingReasons.criticalCves', rule: `must be one of ${MISSING_REASONS.join(', ')}` },
    ]);
    const nested = { ...incomplete, missingReasons: { criticalCves: { code: 'FETCH_FAILED' } } };
    expect(checkMessage('urs/score-batch', scoreBatch(nested as unknown as ScoredDevice))).not.toEqual([]);
  });
});

describe('missingReasonsOf', () => {
  it('should build nothing when no signal is missing', () => {
    expect(missingReasonsOf([], { code: 'DEFENDER_UNAVAILABLE' })).toBeUndefined();
  });

  it("should give each missing signal its reason: the device list's gave none, the fetch's by its code", () => {
    expect(missingReasonsOf(['riskScore', 'inactivity'], undefined)).toEqual({
      riskScore: 'NOT_REPORTED',
      inactivity: 'NOT_REPORTED',
    });
    const cves = (code?: string) =>
      missingReasonsOf(['criticalCves'], code === undefined ? undefined : { code })?.['criticalCves'];
    expect(cves('EXCLUDED')).toBe('EXCLUDED');
    expect(cves('NOT_IN_EXPORT_SNAPSHOT')).toBe('NOT_IN_EXPORT_SNAPSHOT');
    expect(cves('DEFENDER_NOT_FOUND')).toBe('DEFENDER_NOT_FOUND');
    expect(cves('DEFENDER_UNREADABLE_RECORDS')).toBe('DEFENDER_UNREADABLE_RECORDS');
    // Every other failure is one reason: a tenant failing one way, then another, is not republished.
    for (const code of ['DEFENDER_UNAVAILABLE', 'DEFENDER_THROTTLED', 'BULK_EXPORT_TIMEOUT', 'UNEXPECTED'])
      expect(cves(code)).toBe('FETCH_FAILED');
    expect(cves()).toBe('UNKNOWN');
  });
});
