import fc from 'fast-check';
import { DEFAULT_PROFILE, bandOf, compileProfile, parseProfile, scoreDevice } from '@urs/scoring';
import type { MachineRecord, Profile, ProfileInput, VulnerabilityRecord } from '@urs/scoring';
import { NOW_MS, criticalCves, days, seenAgo, vulnerability } from './fixtures';

const points = fc.integer({ min: 0, max: 100 });

/** Any valid profile: random points everywhere, random weights totalling 100, either policy. */
const profileArb: fc.Arbitrary<Profile> = fc
  .record({
    critical: points,
    risk: fc.tuple(points, points, points),
    exposure: fc.tuple(points, points),
    av: fc.tuple(points, points),
    onboarding: points,
    health: fc.tuple(points, points),
    inactivity: fc.tuple(points, points, points, points, points),
    cvssThreshold: fc.integer({ min: 0, max: 100 }).map((tenths) => tenths / 10),
    pointsPerCve: points,
    maxPoints: points,
    missingSignals: fc.constantFrom('ignore' as const, 'assume-worst' as const),
  })
  .map((r) =>
    parseProfile({
      weights: { criticalRisk: r.critical, operational: 100 - r.critical },
      critical: {
        riskScore: { Low: r.risk[0], Medium: r.risk[1], High: r.risk[2] },
        exposureLevel: { Medium: r.exposure[0], High: r.exposure[1] },
        avStatus: { Disabled: r.av[0], NotReporting: r.av[1] },
        onboarding: { NotOnboarded: r.onboarding },
      },
      operational: {
        healthStatus: { Inactive: r.health[0], ImpairedCommunication: r.health[1] },
        inactivity: {
          lt1d: r.inactivity[0],
          '1to3d': r.inactivity[1],
          '4to7d': r.inactivity[2],
          '8to14d': r.inactivity[3],
          gt14d: r.inactivity[4],
        },
        criticalCves: {
          cvssThreshold: r.cvssThreshold,
          pointsPerCve: r.pointsPerCve,
          maxPoints: r.maxPoints,
        },
      },
      missingSignals: r.missingSignals,
    }),
  );

/** A value as MDE might send it: canonical, in another case, Unknown, garbage, empty or absent. */
function enumValue(values: readonly string[]): fc.Arbitrary<string | null | undefined> {
  return fc.oneof(
    fc.constantFrom(...values),
    fc.constantFrom(...values).map((v) => v.toUpperCase()),
    fc.constantFrom(...values).map((v) => v.toLowerCase()),
    fc.constantFrom('Unknown', '', 'Something', null, undefined),
  );
}

const RISK = ['None', 'Informational', 'Low', 'Medium', 'High'];
const EXPOSURE = ['None', 'Low', 'Medium', 'High'];
const AV = ['Updated', 'NotUpdated', 'NotSupported', 'Disabled', 'NotReporting'];
const ONBOARDING = ['Onboarded', 'CanBeOnboarded', 'Unsupported', 'InsufficientInfo'];
const HEALTH = [
  'Active',
  'Inactive',
  'ImpairedCommunication',
  'NoSensorData',
  'NoSensorDataImpairedCommunication',
];

const machineArb: fc.Arbitrary<MachineRecord> = fc.record({
  id: fc.constant('m'),
  riskScore: enumValue(RISK),
  exposureLevel: enumValue(EXPOSURE),
  defenderAvStatus: enumValue(AV),
  onboardingStatus: enumValue(ONBOARDING),
  healthStatus: enumValue(HEALTH),
  lastSeen: fc.oneof(
    fc.integer({ min: -days(2), max: days(40) }).map(seenAgo),
    fc.constantFrom(null, 'never'),
  ),
  rbacGroupId: fc.oneof(fc.integer(), fc.string()),
});

const vulnsArb: fc.Arbitrary<VulnerabilityRecord[] | null> = fc.option(
  fc.array(
    fc
      .record({
        id: fc.constantFrom('CVE-1', 'CVE-2', 'CVE-3', 'CVE-4', 'CVE-5'),
        cvss: fc.option(fc.integer({ min: 0, max: 100 })),
      })
      .map(({ id, cvss }) => vulnerability(id, cvss === null ? null : cvss / 10)),
    { maxLength: 8 },
  ),
);

/** Every integer-points path of a profile, for "raising points never lowers the score". */
const POINT_PATHS: ReadonlyArray<readonly [string, string, string]> = [
  ...Object.entries(DEFAULT_PROFILE.critical).flatMap(([signal, table]) =>
    Object.keys(table).map((k) => ['critical', signal, k] as const),
  ),
  ...Object.entries(DEFAULT_PROFILE.operational).flatMap(([signal, table]) =>
    Object.keys(table)
      .filter((k) => k !== 'cvssThreshold')
      .map((k) => ['operational', signal, k] as const),
  ),
];

function withPoints(
  profile: Profile,
  [group, signal, key]: readonly [string, string, string],
  value: number,
): Profile {
  const input = JSON.parse(JSON.stringify(profile)) as Record<string, Record<string, Record<string, number>>>;
  (input[group] as Record<string, Record<string, number>>)[signal]![key] = value;
  return parseProfile(input as ProfileInput);
}

describe('scoreDevice properties', () => {
  it('should always give an integer score 0–100 in its band, with sub-scores in [0, 1]', () => {
    fc.assert(
      fc.property(machineArb, vulnsArb, profileArb, (machine, vulns, profile) => {
        const result = scoreDevice(machine, vulns, profile, NOW_MS);
        expect(Number.isInteger(result.score)).toBe(true);
        expect(result.score).toBeGreaterThanOrEqual(0);
        expect(result.score).toBeLessThanOrEqual(100);
        expect(result.band).toBe(bandOf(result.score));
        for (const sub of [result.criticalScore, result.operationalScore]) {
          expect(sub).toBeGreaterThanOrEqual(0);
          expect(sub).toBeLessThanOrEqual(1);
          expect(Number.isInteger(Math.round(sub * 100))).toBe(true);
        }
        // The sub-scores are the capped sums of the contributions.
        const sum = (group: string): number =>
          Math.min(
            100,
            result.contributions.filter((c) => c.group === group).reduce((total, c) => total + c.points, 0),
          );
        expect(Math.round(result.criticalScore * 100)).toBe(sum('critical'));
        expect(Math.round(result.operationalScore * 100)).toBe(sum('operational'));
      }),
      { numRuns: 500 },
    );
  });

  it('should never lower the score when any indicator’s points rise', () => {
    fc.assert(
      fc.property(
        machineArb,
        vulnsArb,
        profileArb,
        fc.constantFrom(...POINT_PATHS),
        fc.integer({ min: 1, max: 100 }),
        (machine, vulns, profile, path, raise) => {
          const current = (
            profile[path[0] as 'critical'] as unknown as Record<string, Record<string, number>>
          )[path[1]]![path[2]]!;
          const raised = withPoints(profile, path, Math.min(100, current + raise));
          const before = scoreDevice(machine, vulns, profile, NOW_MS).score;
          expect(scoreDevice(machine, vulns, raised, NOW_MS).score).toBeGreaterThanOrEqual(before);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('should never lower the score when another indicator matches', () => {
    // From a value that scores nothing (or, under ignore, a missing one) to a scoring value; or more critical CVEs.
    const change = fc.oneof(
      fc.record({
        field: fc.constant('riskScore'),
        from: fc.constantFrom('None', 'Informational'),
        to: fc.constantFrom('Low', 'Medium', 'High'),
      }),
      fc.record({
        field: fc.constant('exposureLevel'),
        from: fc.constantFrom('None', 'Low'),
        to: fc.constantFrom('Medium', 'High'),
      }),
      fc.record({
        field: fc.constant('defenderAvStatus'),
        from: fc.constantFrom('Updated', 'NotUpdated', 'NotSupported'),
        to: fc.constantFrom('Disabled', 'NotReporting'),
      }),
      fc.record({
        field: fc.constant('onboardingStatus'),
        from: fc.constant('Onboarded'),
        to: fc.constantFrom('CanBeOnboarded', 'Unsupported'),
      }),
      fc.record({
        field: fc.constant('healthStatus'),
        from: fc.constantFrom('Active', 'NoSensorData'),
        to: fc.constantFrom('Inactive', 'ImpairedCommunication'),
      }),
    );
    fc.assert(
      fc.property(
        machineArb,
        vulnsArb,
        profileArb,
        change,
        fc.boolean(),
        (machine, vulns, profile, { field, from, to }, fromMissing) => {
          const start = fromMissing && profile.missingSignals === 'ignore' ? undefined : from;
          const before = scoreDevice({ ...machine, [field]: start }, vulns, profile, NOW_MS);
          const after = scoreDevice({ ...machine, [field]: to }, vulns, profile, NOW_MS);
          expect(after.score).toBeGreaterThanOrEqual(before.score);
          expect(after.contributions.length).toBeGreaterThanOrEqual(before.contributions.length);
        },
      ),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(
        machineArb,
        profileArb,
        fc.integer({ min: 0, max: 6 }),
        fc.integer({ min: 1, max: 4 }),
        (machine, profile, n, more) => {
          const before = scoreDevice(machine, criticalCves(n), profile, NOW_MS).score;
          expect(scoreDevice(machine, criticalCves(n + more), profile, NOW_MS).score).toBeGreaterThanOrEqual(
            before,
          );
        },
      ),
    );
  });

  it('should put every score exactly on its band boundary (20/21, 40/41, 60/61, 80/81)', () => {
    // Weights 100/0 and riskScore High = k make the score exactly k.
    fc.assert(
      fc.property(points, (k) => {
        const profile = compileProfile({
          weights: { criticalRisk: 100, operational: 0 },
          critical: { riskScore: { High: k } },
        });
        const result = scoreDevice({ riskScore: 'High' }, [], profile, NOW_MS);
        expect(result.score).toBe(k);
        const expected =
          k <= 20
            ? 'Trustworthy'
            : k <= 40
              ? 'Low Risk'
              : k <= 60
                ? 'Moderate Risk'
                : k <= 80
                  ? 'Suspicious'
                  : 'High Risk';
        expect(result.band).toBe(expected);
      }),
      { examples: [[20], [21], [40], [41], [60], [61], [80], [81], [0], [100]] },
    );
  });

  it('should score exactly O with weights 0/100 and exactly C with weights 100/0', () => {
    fc.assert(
      fc.property(machineArb, vulnsArb, profileArb, (machine, vulns, profile) => {
        const input = JSON.parse(JSON.stringify(profile)) as { weights: Profile['weights'] };
        const operationalOnly = parseProfile({ ...input, weights: { criticalRisk: 0, operational: 100 } });
        const criticalOnly = parseProfile({ ...input, weights: { criticalRisk: 100, operational: 0 } });
        const o = scoreDevice(machine, vulns, operationalOnly, NOW_MS);
        const c = scoreDevice(machine, vulns, criticalOnly, NOW_MS);
        expect(o.score).toBe(Math.round(o.operationalScore * 100));
        expect(c.score).toBe(Math.round(c.criticalScore * 100));
        expect(o.contributions).toEqual(c.contributions);
      }),
      { numRuns: 300 },
    );
  });

  it('should be deterministic: the same inputs give the same result', () => {
    fc.assert(
      fc.property(machineArb, vulnsArb, profileArb, (machine, vulns, profile) => {
        const copy = JSON.parse(JSON.stringify(machine)) as MachineRecord;
        expect(scoreDevice(copy, vulns, JSON.parse(JSON.stringify(profile)), NOW_MS)).toEqual(
          scoreDevice(machine, vulns, profile, NOW_MS),
        );
      }),
    );
  });
});
