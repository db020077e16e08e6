import {
  DEFAULT_PROFILE,
  compileProfile,
  parseProfile,
  scoreDevice,
  summariseVulnerabilities,
} from '@urs/scoring';
import type { ProfileInput, VulnerabilitySummary } from '@urs/scoring';
import { NOW, NOW_MS, criticalCves, days, machine, profile, score, seenAgo, subScores } from './fixtures';

describe('scoreDevice', () => {
  describe('worked examples of scoring.md (default profile)', () => {
    it.each([
      ['everything clean, seen today', {}, 0, 0, 0, 0, 'Trustworthy'],
      ['riskScore High', { riskScore: 'High' }, 0, 100, 0, 70, 'Suspicious'],
      ['exposure Medium, 1 critical CVE', { exposureLevel: 'Medium' }, 1, 40, 25, 36, 'Low Risk'],
      ['exposure High, 2 critical CVEs', { exposureLevel: 'High' }, 2, 80, 50, 71, 'Suspicious'],
      [
        'health Inactive, last seen 20 days ago',
        { healthStatus: 'Inactive', lastSeen: seenAgo(days(20)) },
        0,
        0,
        100,
        30,
        'Low Risk',
      ],
      ['riskScore High, 4 critical CVEs', { riskScore: 'High' }, 4, 100, 100, 100, 'High Risk'],
    ] as const)('should score "%s"', (_name, overrides, cves, c, o, expectedScore, band) => {
      const result = score(overrides, criticalCves(cves));
      expect(subScores(result)).toEqual([c, o]);
      expect(result.score).toBe(expectedScore);
      expect(result.band).toBe(band);
      expect(result.missing).toEqual([]);
    });

    it('should explain "exposure High, 2 critical CVEs" indicator by indicator', () => {
      const result = score({ exposureLevel: 'High' }, criticalCves(2));
      expect(result.contributions).toEqual([
        { group: 'critical', signal: 'exposureLevel', value: 'High', points: 80, assumed: false },
        { group: 'operational', signal: 'inactivity', value: 'lt1d', points: 0, assumed: false },
        { group: 'operational', signal: 'criticalCves', value: 2, points: 50, assumed: false },
      ]);
      expect(result.profileHash).toBe(profile.hash);
    });

    it('should accept the plain default profile and a Date or ISO string for now', () => {
      const viaPlain = scoreDevice(machine({ riskScore: 'High' }), [], DEFAULT_PROFILE, new Date(NOW_MS));
      const viaIso = scoreDevice(machine({ riskScore: 'High' }), [], {}, NOW);
      expect(viaPlain).toEqual(score({ riskScore: 'High' }));
      expect(viaIso).toEqual(viaPlain);
    });
  });

  describe('missing signals', () => {
    const bare = {
      riskScore: undefined,
      exposureLevel: 'Unknown',
      defenderAvStatus: undefined,
      onboardingStatus: null,
      healthStatus: 'Unknown',
      lastSeen: undefined,
    };

    it('should score missing signals 0 under ignore and list them', () => {
      const result = score(bare, null);
      expect(result.score).toBe(0);
      expect(result.contributions).toEqual([]);
      expect(result.missing).toEqual([
        'riskScore',
        'exposureLevel',
        'avStatus',
        'onboarding',
        'healthStatus',
        'inactivity',
        'criticalCves',
      ]);
    });

    it('should charge each missing signal the largest points of its own table under assume-worst', () => {
      const worst = compileProfile({ missingSignals: 'assume-worst' });
      const result = score(bare, null, worst);
      expect(result.contributions).toEqual([
        { group: 'critical', signal: 'riskScore', value: 'High', points: 100, assumed: true },
        { group: 'critical', signal: 'exposureLevel', value: 'High', points: 80, assumed: true },
        { group: 'critical', signal: 'avStatus', value: 'Disabled', points: 100, assumed: true },
        { group: 'critical', signal: 'onboarding', value: 'NotOnboarded', points: 100, assumed: true },
        { group: 'operational', signal: 'healthStatus', value: 'Inactive', points: 60, assumed: true },
        { group: 'operational', signal: 'inactivity', value: 'gt14d', points: 100, assumed: true },
        { group: 'operational', signal: 'criticalCves', value: 'maxPoints', points: 100, assumed: true },
      ]);
      expect(result.score).toBe(100);
      expect(result.missing).toHaveLength(7);
    });

    it('should charge only what is missing under assume-worst, with the table the tenant set', () => {
      const worst = compileProfile({
        missingSignals: 'assume-worst',
        critical: { exposureLevel: { Medium: 45, High: 30 } },
        operational: { criticalCves: { pointsPerCve: 10, maxPoints: 40 } },
      });
      const result = score({ exposureLevel: 'Unknown' }, null, worst);
      expect(result.contributions).toEqual([
        { group: 'critical', signal: 'exposureLevel', value: 'Medium', points: 45, assumed: true },
        { group: 'operational', signal: 'inactivity', value: 'lt1d', points: 0, assumed: false },
        { group: 'operational', signal: 'criticalCves', value: 'maxPoints', points: 40, assumed: true },
      ]);
      // C = 45, O = 40: (45 × 70 + 40 × 30 + 50) / 100 = 44
      expect(result.score).toBe(44);
      expect(score({}, [], worst).score).toBe(0);
    });

    it('should charge nothing for missing CVEs under assume-worst when a CVE is worth 0 points', () => {
      const worst = compileProfile({
        missingSignals: 'assume-worst',
        operational: { criticalCves: { pointsPerCve: 0 } },
      });
      expect(score({}, null, worst).contributions.at(-1)).toMatchObject({
        signal: 'criticalCves',
        points: 0,
        assumed: true,
      });
    });
  });

  describe('result', () => {
    it('should carry every signal with its value and timestamp', () => {
      const lastSeen = '2024-01-08T11:04:02.1234567Z';
      const result = score(
        { riskScore: 'Low', lastSeen, defenderAvStatus: undefined },
        { ...(summariseVulnerabilities(criticalCves(1), 9) as VulnerabilitySummary), fetchedAt: NOW },
      );
      expect(result.signals).toEqual({
        riskScore: { value: 'Low', at: lastSeen },
        exposureLevel: { value: 'Low', at: lastSeen },
        avStatus: { value: null, at: lastSeen },
        onboarding: { value: 'Onboarded', at: lastSeen },
        healthStatus: { value: 'Active', at: lastSeen },
        inactivity: { value: 2, at: lastSeen },
        criticalCves: { value: 1, at: NOW },
      });
    });

    it('should be deterministic and not share mutable state between results', () => {
      const m = machine({ riskScore: 'Medium', healthStatus: 'Inactive' });
      const first = scoreDevice(m, criticalCves(1), profile, NOW_MS);
      const second = scoreDevice(m, criticalCves(1), profile, NOW_MS);
      expect(second).toEqual(first);
      expect(second.contributions).not.toBe(first.contributions);
      expect(second.missing).not.toBe(first.missing);
    });

    it('should round half up', () => {
      // C = 50 (riskScore Medium), O = 25 (1 CVE) with weights 50/50: (2500 + 1250 + 50) / 100 = 38 (37.5 up).
      const halves = compileProfile(
        parseProfile({ weights: { criticalRisk: 50, operational: 50 } } satisfies ProfileInput),
      );
      expect(score({ riskScore: 'Medium' }, criticalCves(1), halves).score).toBe(38);
      // 0.49 rounds down: C = 1 (riskScore Low = 1) with weight 49 → 0.49.
      const low = compileProfile({
        weights: { criticalRisk: 49, operational: 51 },
        critical: { riskScore: { Low: 1 } },
      });
      expect(score({ riskScore: 'Low' }, [], low).score).toBe(0);
    });
  });
});
