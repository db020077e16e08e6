import { ScoringError, compileProfile, scoreDevice, summariseVulnerabilities } from '@urs/scoring';
import type { MachineRecord, VulnerabilitySummary } from '@urs/scoring';
import {
  NOW_MS,
  criticalCves,
  days,
  hours,
  machine,
  profile,
  score,
  seenAgo,
  subScores,
  vulnerability,
} from './fixtures';

describe('scoreDevice signals', () => {
  describe('matching tables', () => {
    // [signal, field, value as sent, expected points (C or O), missing?]
    const cases: Array<[string, string, unknown, number, 'critical' | 'operational', boolean]> = [
      ['riskScore', 'riskScore', 'Low', 20, 'critical', false],
      ['riskScore', 'riskScore', 'medium', 50, 'critical', false],
      ['riskScore', 'riskScore', 'HIGH', 100, 'critical', false],
      ['riskScore', 'riskScore', 'None', 0, 'critical', false],
      ['riskScore', 'riskScore', 'informational', 0, 'critical', false],
      ['riskScore', 'riskScore', 'Unknown', 0, 'critical', true],
      ['riskScore', 'riskScore', 'Critical', 0, 'critical', true],
      ['riskScore', 'riskScore', null, 0, 'critical', true],
      ['riskScore', 'riskScore', '', 0, 'critical', true],
      ['riskScore', 'riskScore', 3, 0, 'critical', true],
      ['exposureLevel', 'exposureLevel', 'Medium', 40, 'critical', false],
      ['exposureLevel', 'exposureLevel', 'high', 80, 'critical', false],
      ['exposureLevel', 'exposureLevel', 'LOW', 0, 'critical', false],
      ['exposureLevel', 'exposureLevel', 'None', 0, 'critical', false],
      ['exposureLevel', 'exposureLevel', 'unknown', 0, 'critical', true],
      ['avStatus', 'defenderAvStatus', 'Disabled', 100, 'critical', false],
      ['avStatus', 'defenderAvStatus', 'notReporting', 60, 'critical', false],
      ['avStatus', 'defenderAvStatus', 'Updated', 0, 'critical', false],
      ['avStatus', 'defenderAvStatus', 'NotUpdated', 0, 'critical', false],
      ['avStatus', 'defenderAvStatus', 'NotSupported', 0, 'critical', false],
      ['avStatus', 'defenderAvStatus', 'notsupported', 0, 'critical', false],
      ['avStatus', 'defenderAvStatus', 'Unknown', 0, 'critical', true],
      ['avStatus', 'defenderAvStatus', undefined, 0, 'critical', true],
      ['onboarding', 'onboardingStatus', 'Onboarded', 0, 'critical', false],
      ['onboarding', 'onboardingStatus', 'onboarded', 0, 'critical', false],
      ['onboarding', 'onboardingStatus', 'CanBeOnboarded', 100, 'critical', false],
      ['onboarding', 'onboardingStatus', 'Unsupported', 100, 'critical', false],
      ['onboarding', 'onboardingStatus', 'InsufficientInfo', 100, 'critical', false],
      ['onboarding', 'onboardingStatus', 'SomethingNew', 100, 'critical', false],
      ['onboarding', 'onboardingStatus', 'Unknown', 0, 'critical', true],
      ['onboarding', 'onboardingStatus', '', 0, 'critical', true],
      ['onboarding', 'onboardingStatus', '  ', 0, 'critical', true],
      ['healthStatus', 'healthStatus', 'Inactive', 60, 'operational', false],
      ['healthStatus', 'healthStatus', 'impairedcommunication', 50, 'operational', false],
      ['healthStatus', 'healthStatus', 'Active', 0, 'operational', false],
      ['healthStatus', 'healthStatus', 'NoSensorData', 0, 'operational', false],
      ['healthStatus', 'healthStatus', 'NoSensorDataImpairedCommunication', 0, 'operational', false],
      ['healthStatus', 'healthStatus', 'Unknown', 0, 'operational', true],
      ['healthStatus', 'healthStatus', 'Offline', 0, 'operational', true],
    ];

    it.each(cases)(
      'should score %s %s=%p as %p %s points (missing: %p)',
      (signal, field, value, points, group, isMissing) => {
        const overrides: Record<string, unknown> = { [field]: value };
        if (value === undefined) overrides[field] = undefined;
        const result = score(overrides as Partial<MachineRecord>);
        const [c, o] = subScores(result);
        expect(group === 'critical' ? c : o).toBe(points);
        expect(group === 'critical' ? o : c).toBe(0);
        expect(result.missing).toEqual(isMissing ? [signal] : []);
        const contribution = result.contributions.find((x) => x.signal === signal);
        if (points > 0) expect(contribution).toMatchObject({ group, signal, points, assumed: false });
        else expect(contribution).toBeUndefined();
      },
    );

    it('should name the profile indicator, not the spelling sent, and keep the raw value as the signal', () => {
      const result = score({ riskScore: 'hIgH', onboardingStatus: 'CanBeOnboarded' });
      expect(result.contributions.slice(0, 2)).toEqual([
        { group: 'critical', signal: 'riskScore', value: 'High', points: 100, assumed: false },
        { group: 'critical', signal: 'onboarding', value: 'NotOnboarded', points: 100, assumed: false },
      ]);
      expect(result.signals.riskScore).toEqual({ value: 'hIgH', at: machine().lastSeen });
      expect(result.signals.onboarding.value).toBe('CanBeOnboarded');
    });

    it('should cap C at 100 when critical indicators add up past it', () => {
      const result = score({ riskScore: 'High', exposureLevel: 'High', defenderAvStatus: 'Disabled' });
      expect(subScores(result)).toEqual([100, 0]);
      expect(result.contributions.filter((x) => x.group === 'critical').map((x) => x.points)).toEqual([
        100, 80, 100,
      ]);
    });
  });

  describe('field spellings of real MDE records', () => {
    it('should read onboardingstatus (the documented spelling) and PascalCase keys', () => {
      const m: MachineRecord = {
        id: 'x',
        RiskScore: 'High',
        ExposureLevel: 'Medium',
        DefenderAvStatus: 'Disabled',
        onboardingstatus: 'CanBeOnboarded',
        HealthStatus: 'Inactive',
        LastSeen: seenAgo(days(20)),
      };
      const result = scoreDevice(m, [], profile, NOW_MS);
      expect(subScores(result)).toEqual([100, 100]);
      expect(result.contributions.map((x) => x.signal)).toEqual([
        'riskScore',
        'exposureLevel',
        'avStatus',
        'onboarding',
        'healthStatus',
        'inactivity',
      ]);
      expect(result.missing).toEqual([]);
    });

    it('should read OnboardingStatus in PascalCase too', () => {
      const result = scoreDevice({ OnboardingStatus: 'InsufficientInfo' }, [], profile, NOW_MS);
      expect(result.contributions[0]).toMatchObject({
        signal: 'onboarding',
        value: 'NotOnboarded',
        points: 100,
      });
    });

    it('should ignore undocumented fields and accept rbacGroupId as a number or a string', () => {
      const asNumber = score({ rbacGroupId: 140, mergedIntoMachineId: null, isExcluded: false });
      const asString = score({ rbacGroupId: '140', vmMetadata: { vm_id: 'v' } });
      expect(asNumber.score).toBe(0);
      expect(asString).toEqual(asNumber);
    });

    it('should mark every signal missing for an empty record', () => {
      const result = scoreDevice({}, null, profile, NOW_MS);
      expect(result.score).toBe(0);
      expect(result.missing).toEqual([
        'riskScore',
        'exposureLevel',
        'avStatus',
        'onboarding',
        'healthStatus',
        'inactivity',
        'criticalCves',
      ]);
      expect(result.contributions).toEqual([]);
    });

    it('should reject a machine that is not an object', () => {
      expect(() => scoreDevice(null as unknown as MachineRecord, [], profile, NOW_MS)).toThrow(ScoringError);
      expect(() => scoreDevice([] as unknown as MachineRecord, [], profile, NOW_MS)).toThrow(
        /machine: must be a JSON object/,
      );
    });

    it('should reject an invalid now', () => {
      expect(() => scoreDevice(machine(), [], profile, 'yesterday')).toThrow(/now: must be a valid time/);
    });
  });

  describe('inactivity', () => {
    it.each([
      ['23h59m', hours(23) + 59 * 60_000, 0, 'lt1d', 0],
      ['24h', hours(24), 1, '1to3d', 20],
      ['3d23h', days(3) + hours(23), 3, '1to3d', 20],
      ['4d', days(4), 4, '4to7d', 40],
      ['7d', days(7), 7, '4to7d', 40],
      ['7d23h59m', days(8) - 60_000, 7, '4to7d', 40],
      ['8d', days(8), 8, '8to14d', 70],
      ['14d', days(14), 14, '8to14d', 70],
      ['15d', days(15), 15, 'gt14d', 100],
      ['400d', days(400), 400, 'gt14d', 100],
      ['in the future', -hours(5), 0, 'lt1d', 0],
    ])('should bucket a lastSeen %s before now', (_name, agoMs, wholeDays, bucket, points) => {
      const result = score({ lastSeen: seenAgo(agoMs) });
      expect(result.signals.inactivity.value).toBe(wholeDays);
      expect(result.contributions).toEqual([
        { group: 'operational', signal: 'inactivity', value: bucket, points, assumed: false },
      ]);
      expect(subScores(result)).toEqual([0, points]);
    });

    it('should read 7 fractional digits exactly to the millisecond', () => {
      const result = scoreDevice(
        machine({ lastSeen: '2024-01-09T12:00:00.0000001Z' }),
        [],
        profile,
        '2024-01-10T11:59:59.9999999Z',
      );
      expect(result.signals.inactivity.value).toBe(0);
      const oneDay = scoreDevice(
        machine({ lastSeen: '2024-01-09T12:00:00.0000001Z' }),
        [],
        profile,
        '2024-01-10T12:00:00.0009999Z',
      );
      expect(oneDay.signals.inactivity.value).toBe(1);
    });

    it('should not count a whole day a lastSeen cut to the millisecond would have reached', () => {
      const daysSince = (lastSeen: string, now: number | string) =>
        scoreDevice(machine({ lastSeen }), [], profile, now).signals.inactivity.value;
      // Half a microsecond short of a day, now in epoch ms as the scorer gives it.
      expect(daysSince('2026-12-03T23:59:59.9995Z', Date.UTC(2026, 11, 4, 23, 59, 59, 999))).toBe(0);
      expect(daysSince('2026-12-03T23:59:59.9995Z', Date.UTC(2026, 11, 5, 0, 0, 0, 0))).toBe(1);
      // 100 ns short of 8 days (MDE's seventh digit), and exactly 8 days.
      expect(daysSince('2026-11-26T10:00:00.1234567Z', '2026-12-04T10:00:00.123Z')).toBe(7);
      expect(daysSince('2026-11-26T10:00:00.1234567Z', '2026-12-04T10:00:00.1234567Z')).toBe(8);
      expect(daysSince('2026-11-26T10:00:00.1234567Z', '2026-12-04T10:00:00.12345671Z')).toBe(8);
      // A fraction shorter than a millisecond's digits, then a zone: nothing past the millisecond.
      expect(daysSince('2026-12-03T11:00:00.1+01:00', Date.UTC(2026, 11, 4, 10, 0, 0, 100))).toBe(1);
      // Seen within the same millisecond as now, before or after it.
      expect(daysSince('2026-12-04T10:00:00.1235Z', '2026-12-04T10:00:00.123Z')).toBe(0);
      expect(daysSince('2026-12-04T10:00:00.123Z', '2026-12-04T10:00:00.1235Z')).toBe(0);
    });

    it('should score .NET DateTime.MinValue (0001-01-01) as gt14d', () => {
      expect(score({ lastSeen: '0001-01-01T00:00:00Z' }).contributions[0]).toMatchObject({ value: 'gt14d' });
    });

    it.each([null, '', 'Unknown', 'yesterday', '2024-02-30T00:00:00Z', 1704715200000])(
      'should treat lastSeen %p as a missing signal',
      (lastSeen) => {
        const result = score({ lastSeen } as Partial<MachineRecord>);
        expect(result.missing).toEqual(['inactivity']);
        expect(result.signals.inactivity.value).toBeNull();
        expect(result.contributions).toEqual([]);
      },
    );
  });

  describe('criticalCves', () => {
    it('should count a CVE whose cvssV3 is exactly the threshold and not one just below', () => {
      expect(score({}, [vulnerability('CVE-1', 9.0)]).signals.criticalCves.value).toBe(1);
      expect(score({}, [vulnerability('CVE-1', 8.9)]).signals.criticalCves.value).toBe(0);
      const at75 = compileProfile({ operational: { criticalCves: { cvssThreshold: 7.5 } } });
      expect(
        score({}, [vulnerability('CVE-1', 7.5), vulnerability('CVE-2', 7.4)], at75).signals.criticalCves
          .value,
      ).toBe(1);
    });

    it('should count the same CVE listed twice (two vulnerable products) once', () => {
      const result = score({}, [
        vulnerability('CVE-2024-1', 9.8),
        vulnerability('CVE-2024-1', 9.8),
        vulnerability('CVE-2024-2', 9.1),
        vulnerability('CVE-2024-1', 9.8),
      ]);
      expect(result.signals.criticalCves.value).toBe(2);
      expect(subScores(result)).toEqual([0, 50]);
    });

    it('should not count CVEs without a score (cvssV3 null)', () => {
      expect(score({}, [vulnerability('CVE-1', null)]).signals.criticalCves.value).toBe(0);
    });

    it('should cap the contribution at maxPoints', () => {
      const result = score({}, criticalCves(7));
      expect(result.contributions.at(-1)).toEqual({
        group: 'operational',
        signal: 'criticalCves',
        value: 7,
        points: 100,
        assumed: false,
      });
      const capped = compileProfile({ operational: { criticalCves: { pointsPerCve: 30, maxPoints: 50 } } });
      expect(score({}, criticalCves(2), capped).contributions.at(-1)?.points).toBe(50);
    });

    it('should treat vulnerabilities that could not be fetched (null or undefined) as missing', () => {
      expect(score({}, null).missing).toEqual(['criticalCves']);
      expect(scoreDevice(machine(), undefined, profile, NOW_MS).missing).toEqual(['criticalCves']);
      expect(score({}, null).signals.criticalCves).toEqual({ value: null, at: null });
      expect(score({}, []).signals.criticalCves).toEqual({ value: 0, at: null });
      expect(score({}, []).missing).toEqual([]);
    });

    it('should score a summary like the list it was made from, with its fetchedAt as the timestamp', () => {
      const list = [...criticalCves(3), vulnerability('CVE-1', 4), vulnerability('CVE-2024-1000', 9.8)];
      const summary = {
        ...(summariseVulnerabilities(list, 9.0) as VulnerabilitySummary),
        fetchedAt: '2024-01-10T11:00:00Z',
      };
      const fromSummary = score({ riskScore: 'Medium' }, summary);
      const fromList = score({ riskScore: 'Medium' }, list);
      expect(fromSummary.score).toBe(fromList.score);
      expect(fromSummary.contributions).toEqual(fromList.contributions);
      expect(fromSummary.signals.criticalCves).toEqual({ value: 3, at: '2024-01-10T11:00:00Z' });
      expect(score({}, { criticalCveCount: 2 }).signals.criticalCves.value).toBe(2);
    });

    it('should refuse a summary counted with another threshold', () => {
      const summary = summariseVulnerabilities(criticalCves(1), 7.0);
      expect(() => score({}, summary)).toThrow(
        expect.objectContaining({ code: 'VULNERABILITY_SUMMARY_MISMATCH', canRetry: false }),
      );
    });

    it("should read CVSS scores by the pipeline's rule: 1e1 and 0x5 are unreadable, not 10 and 5", () => {
      const result = score({}, [
        { id: 'CVE-1', cvssV3: '1e1' },
        { id: 'CVE-2', cvssV3: ' 0x5' },
      ]);
      expect(result.missing).toContain('criticalCves');
      expect(result.signals.criticalCves.value).toBeNull();
    });

    it('should skip a malformed vulnerability record as the pipeline does, telling its index and why', () => {
      const skipped: Array<[number, string]> = [];
      const list = [vulnerability('CVE-1', 9), { cvssV3: 9 }, vulnerability('CVE-2', 11), null];
      const result = scoreDevice(
        machine(),
        list as never,
        compileProfile(undefined),
        NOW_MS,
        (index, reason) => skipped.push([index, reason]),
      );
      expect(result.signals.criticalCves.value).toBe(1);
      expect(skipped).toEqual([
        [1, 'id must be a non-empty string (the CVE id)'],
        [2, 'cvssV3 must be a number from 0 to 10, numeric text or null (got 11)'],
        [3, 'record is not an object'],
      ]);
      expect(score({}, [{ cvssV3: 9 }]).missing).toContain('criticalCves');
      expect(() => score({}, { criticalCveCount: -1 })).toThrow(
        expect.objectContaining({ code: 'VULNERABILITY_INVALID' }),
      );
    });
  });
});
