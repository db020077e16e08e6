import {
  DEFAULT_PROFILE,
  PROFILE_SCHEMA,
  ProfileError,
  canonicalJson,
  parseProfile,
  profileHash,
} from '@urs/scoring';
import { UrsError } from '@urs/resilience';

function rejection(input: unknown): ProfileError {
  try {
    parseProfile(input);
  } catch (error) {
    if (error instanceof ProfileError) return error;
    throw error;
  }
  throw new Error('the profile was accepted');
}

describe('parseProfile', () => {
  it('should return the default profile for no profile', () => {
    expect(parseProfile(undefined)).toBe(DEFAULT_PROFILE);
    expect(parseProfile(null)).toBe(DEFAULT_PROFILE);
    expect(parseProfile({})).toEqual(DEFAULT_PROFILE);
  });

  it('should hold the values of scoring.md as the default', () => {
    expect(DEFAULT_PROFILE).toEqual({
      weights: { criticalRisk: 70, operational: 30 },
      critical: {
        riskScore: { Low: 20, Medium: 50, High: 100 },
        exposureLevel: { Medium: 40, High: 80 },
        avStatus: { Disabled: 100, NotReporting: 60 },
        onboarding: { NotOnboarded: 100 },
      },
      operational: {
        healthStatus: { Inactive: 60, ImpairedCommunication: 50 },
        inactivity: { lt1d: 0, '1to3d': 20, '4to7d': 40, '8to14d': 70, gt14d: 100 },
        criticalCves: { cvssThreshold: 9.0, pointsPerCve: 25, maxPoints: 100 },
      },
      missingSignals: 'ignore',
    });
  });

  it('should fill in the defaults for whatever a tenant leaves out, at any depth', () => {
    const profile = parseProfile({
      weights: { criticalRisk: 60, operational: 40 },
      critical: { riskScore: { High: 90 } },
      operational: { criticalCves: { cvssThreshold: 7.5 } },
      missingSignals: 'assume-worst',
    });
    expect(profile.weights).toEqual({ criticalRisk: 60, operational: 40 });
    expect(profile.critical.riskScore).toEqual({ Low: 20, Medium: 50, High: 90 });
    expect(profile.critical.exposureLevel).toEqual(DEFAULT_PROFILE.critical.exposureLevel);
    expect(profile.operational.criticalCves).toEqual({
      cvssThreshold: 7.5,
      pointsPerCve: 25,
      maxPoints: 100,
    });
    expect(profile.operational.inactivity).toEqual(DEFAULT_PROFILE.operational.inactivity);
    expect(profile.missingSignals).toBe('assume-worst');
  });

  it('should return a frozen profile and leave the input alone', () => {
    const input = { critical: { riskScore: { Low: 10 } } };
    const profile = parseProfile(input);
    expect(Object.isFrozen(profile.critical.riskScore)).toBe(true);
    expect(input).toEqual({ critical: { riskScore: { Low: 10 } } });
  });

  it('should accept weights 0/100 and 100/0 and points 0 and 100', () => {
    expect(parseProfile({ weights: { criticalRisk: 0, operational: 100 } }).weights.operational).toBe(100);
    expect(parseProfile({ weights: { criticalRisk: 100, operational: 0 } }).weights.criticalRisk).toBe(100);
    expect(parseProfile({ critical: { riskScore: { Low: 0, High: 100 } } }).critical.riskScore.Low).toBe(0);
  });

  it.each([
    [
      { weights: { criticalRisk: 80, operational: 30 } },
      'profile.weights: criticalRisk + operational must total exactly 100 (a weight left out takes its default 70/30) (got 80 + 30 = 110)',
    ],
    [
      { weights: { criticalRisk: 50 } },
      'profile.weights: criticalRisk + operational must total exactly 100 (a weight left out takes its default 70/30) (got 50 + 30 = 80)',
    ],
    [
      { weights: { criticalRisk: 70.5, operational: 29.5 } },
      'profile.weights.criticalRisk: must be an integer from 0 to 100 (got 70.5); profile.weights.operational: must be an integer from 0 to 100 (got 29.5)',
    ],
    [
      { weights: { criticalRisk: 110, operational: -10 } },
      'profile.weights.criticalRisk: must be an integer from 0 to 100 (got 110)',
    ],
    [
      { weights: { criticalRisk: '70', operational: 30 } },
      'profile.weights.criticalRisk: must be an integer from 0 to 100 (got "70")',
    ],
    [
      { critical: { riskScore: { High: 101 } } },
      'profile.critical.riskScore.High: must be an integer from 0 to 100 (got 101)',
    ],
    [
      { critical: { avStatus: { Disabled: -1 } } },
      'profile.critical.avStatus.Disabled: must be an integer from 0 to 100 (got -1)',
    ],
    [
      { operational: { inactivity: { '1to3d': 12.5 } } },
      'profile.operational.inactivity.1to3d: must be an integer from 0 to 100 (got 12.5)',
    ],
    [
      { critical: { riskScore: { Critical: 100 } } },
      'profile.critical.riskScore.Critical: unknown key (allowed: Low, Medium, High)',
    ],
    [
      { critical: { riskScore: { high: 100 } } },
      'profile.critical.riskScore.high: unknown key (allowed: Low, Medium, High)',
    ],
    [
      { weight: { criticalRisk: 70 } },
      'profile.weight: unknown key (allowed: weights, critical, operational, missingSignals)',
    ],
    [
      { operational: { deviceValue: {} } },
      'profile.operational.deviceValue: unknown key (allowed: healthStatus, inactivity, criticalCves)',
    ],
    [
      { operational: { criticalCves: { cvssThreshold: 10.1 } } },
      'profile.operational.criticalCves.cvssThreshold: must be a number from 0 to 10 (got 10.1)',
    ],
    [
      { operational: { criticalCves: { cvssThreshold: -1 } } },
      'profile.operational.criticalCves.cvssThreshold: must be a number from 0 to 10 (got -1)',
    ],
    [
      { operational: { criticalCves: { pointsPerCve: 2.5 } } },
      'profile.operational.criticalCves.pointsPerCve: must be an integer from 0 to 100 (got 2.5)',
    ],
    [
      { operational: { criticalCves: { maxPoints: 150 } } },
      'profile.operational.criticalCves.maxPoints: must be an integer from 0 to 100 (got 150)',
    ],
    [
      { missingSignals: 'worst' },
      'profile.missingSignals: must be one of "ignore", "assume-worst" (got "worst")',
    ],
    [{ critical: [] }, 'profile.critical: must be an object (got an array)'],
    [[], 'profile: must be an object (got an array)'],
    ['{"weights":{}}', 'profile: must be an object (got "{\\"weights\\":{}}")'],
  ])('should reject %j naming the field and the rule', (input, message) => {
    const error = rejection(input);
    expect(error.message).toContain(message);
    expect(error).toBeInstanceOf(UrsError);
    expect(error.code).toBe('PROFILE_INVALID');
    expect(error.canRetry).toBe(false);
  });

  it('should report every violation at once, with structured details', () => {
    const error = rejection({
      weights: { criticalRisk: 1.5 },
      critical: { riskScore: { Low: 200, Bad: 1 } },
    });
    expect(error.violations).toEqual([
      { path: 'profile.weights.criticalRisk', rule: 'must be an integer from 0 to 100', got: '1.5' },
      { path: 'profile.critical.riskScore.Bad', rule: 'unknown key (allowed: Low, Medium, High)' },
      { path: 'profile.critical.riskScore.Low', rule: 'must be an integer from 0 to 100', got: '200' },
    ]);
    expect(error.details).toEqual({ violations: error.violations });
  });

  it('should keep the refused value out of each rule, for answers that must not quote it', () => {
    const value = 'Zx9~value';
    const error = rejection({ missingSignals: value, critical: value, weights: { operational: 31 } });
    expect(error.violations).toEqual([
      { path: 'profile.critical', rule: 'must be an object', got: '"Zx9~value"' },
      { path: 'profile.missingSignals', rule: 'must be one of "ignore", "assume-worst"', got: '"Zx9~value"' },
    ]);
    const weights = rejection({ weights: { operational: 31 } });
    expect(weights.violations).toEqual([
      {
        path: 'profile.weights',
        rule: 'criticalRisk + operational must total exactly 100 (a weight left out takes its default 70/30)',
        got: '70 + 31 = 101',
      },
    ]);
    for (const { rule } of [...error.violations, ...weights.violations]) {
      expect(rule).not.toMatch(/Zx9|got|101|31/);
    }
  });

  it('should publish a draft-07 schema that forbids unknown keys', () => {
    expect(PROFILE_SCHEMA).toMatchObject({
      $schema: 'http://json-schema.org/draft-07/schema#',
      additionalProperties: false,
    });
  });
});

describe('profileHash', () => {
  it('should be the same whatever the key order or whether defaults were written out', () => {
    const a = parseProfile({
      weights: { criticalRisk: 60, operational: 40 },
      missingSignals: 'assume-worst',
    });
    const b = parseProfile({
      missingSignals: 'assume-worst',
      weights: { operational: 40, criticalRisk: 60 },
    });
    const c = parseProfile(JSON.parse(canonicalJson({ ...a, critical: { ...a.critical } })));
    expect(profileHash(a)).toBe(profileHash(b));
    expect(profileHash(a)).toBe(profileHash(c));
    expect(profileHash(parseProfile({}))).toBe(profileHash(DEFAULT_PROFILE));
    expect(profileHash(DEFAULT_PROFILE)).toMatch(/^[0-9a-f]{64}$/);
  });

  it('should change when any value changes', () => {
    const base = profileHash(DEFAULT_PROFILE);
    expect(profileHash(parseProfile({ critical: { riskScore: { Low: 21 } } }))).not.toBe(base);
    expect(profileHash(parseProfile({ operational: { criticalCves: { cvssThreshold: 8.9 } } }))).not.toBe(
      base,
    );
    expect(profileHash(parseProfile({ missingSignals: 'assume-worst' }))).not.toBe(base);
  });
});

describe('canonicalJson', () => {
  it('should sort keys at every level and keep array order', () => {
    expect(canonicalJson({ b: 1, a: { d: [2, 1], c: null } })).toBe('{"a":{"c":null,"d":[2,1]},"b":1}');
  });
});
