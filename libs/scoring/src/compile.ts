import type { SignalName } from '@urs/contracts';
import { parseProfile, profileHash } from './profile';
import type { Profile, ProfileInput } from './profile';

export type SignalGroup = 'critical' | 'operational';

/**
 * One matched indicator: the explanation an admin reads. `value` is the indicator as the profile names it
 * (`High`, `NotOnboarded`, `gt14d`) or, for criticalCves, the number of critical CVEs. `assumed` is true
 * when the signal was missing and the `assume-worst` policy charged its worst indicator (then `value` is
 * that indicator; for criticalCves, whose count is unknown, `maxPoints`, the cap it was charged).
 */
export interface Contribution {
  readonly group: SignalGroup;
  readonly signal: SignalName;
  readonly value: string | number;
  readonly points: number;
  readonly assumed: boolean;
}

/** What a raw enum value resolves to: points (0 and no contribution for "known, scores nothing"), or missing. */
interface Indicator {
  readonly points: number;
  readonly contribution: Contribution | null;
  readonly missing: boolean;
}

/** A compiled enum signal: every accepted spelling (canonical and lower case) to its indicator. */
export interface EnumSignal {
  readonly lookup: ReadonlyMap<string, Indicator>;
  /** The indicator of any other non-empty value (onboarding: anything but Onboarded is NotOnboarded). */
  readonly otherwise: Indicator | undefined;
  /** What a missing signal charges under `assume-worst`. */
  readonly worst: Contribution;
}

/**
 * A profile prepared for the hot path: lookup maps built, contributions pre-made (they are immutable and
 * shared by every result), the hash computed once. Build it once per profile with `compileProfile`.
 */
export class CompiledProfile {
  readonly hash: string;
  readonly criticalWeight: number;
  readonly operationalWeight: number;
  readonly assumeWorst: boolean;
  readonly riskScore: EnumSignal;
  readonly exposureLevel: EnumSignal;
  readonly avStatus: EnumSignal;
  readonly onboarding: EnumSignal;
  readonly healthStatus: EnumSignal;
  /** Contributions of the inactivity buckets lt1d, 1to3d, 4to7d, 8to14d, gt14d, in that order. */
  readonly inactivity: readonly Contribution[];
  readonly inactivityWorst: Contribution;
  readonly cvssThreshold: number;
  readonly pointsPerCve: number;
  readonly maxCvePoints: number;
  readonly criticalCvesWorst: Contribution;

  constructor(readonly profile: Profile) {
    this.hash = profileHash(profile);
    this.criticalWeight = profile.weights.criticalRisk;
    this.operationalWeight = profile.weights.operational;
    this.assumeWorst = profile.missingSignals === 'assume-worst';
    const { critical, operational } = profile;
    this.riskScore = enumSignal('critical', 'riskScore', critical.riskScore, ['None', 'Informational']);
    this.exposureLevel = enumSignal('critical', 'exposureLevel', critical.exposureLevel, ['None', 'Low']);
    this.avStatus = enumSignal('critical', 'avStatus', critical.avStatus, [
      'Updated',
      'NotUpdated',
      'NotSupported',
    ]);
    this.onboarding = enumSignal(
      'critical',
      'onboarding',
      {},
      ['Onboarded'],
      critical.onboarding.NotOnboarded,
    );
    this.healthStatus = enumSignal('operational', 'healthStatus', operational.healthStatus, [
      'Active',
      'NoSensorData',
      'NoSensorDataImpairedCommunication',
    ]);
    this.inactivity = INACTIVITY_BUCKETS.map((bucket) =>
      contribution('operational', 'inactivity', bucket, operational.inactivity[bucket]),
    );
    this.inactivityWorst = worstOf('operational', 'inactivity', operational.inactivity);
    const cves = operational.criticalCves;
    this.cvssThreshold = cves.cvssThreshold;
    this.pointsPerCve = cves.pointsPerCve;
    this.maxCvePoints = cves.maxPoints;
    // The most the signal can add: maxPoints, reached as soon as there are enough CVEs (never if a CVE is worth 0).
    const cveWorst = cves.pointsPerCve > 0 ? cves.maxPoints : 0;
    this.criticalCvesWorst = freezeContribution('operational', 'criticalCves', 'maxPoints', cveWorst, true);
  }
}

/** The inactivity buckets in the order of `CompiledProfile.inactivity`. */
export const INACTIVITY_BUCKETS = ['lt1d', '1to3d', '4to7d', '8to14d', 'gt14d'] as const;

const compiled = new WeakMap<object, CompiledProfile>();

/**
 * Validates (with `parseProfile`) and compiles a profile; cached per input object, so calling it with the
 * same profile again costs a WeakMap lookup. Throws a ProfileError for an invalid profile.
 */
export function compileProfile(
  profile: Profile | ProfileInput | CompiledProfile | null | undefined,
): CompiledProfile {
  if (profile instanceof CompiledProfile) return profile;
  if (profile === null || profile === undefined) return compileProfile(parseProfile(undefined));
  let result = compiled.get(profile);
  if (result === undefined) {
    result = new CompiledProfile(parseProfile(profile));
    compiled.set(profile, result);
  }
  return result;
}

const MISSING: Indicator = Object.freeze({ points: 0, contribution: null, missing: true });
const SCORES_NOTHING: Indicator = Object.freeze({ points: 0, contribution: null, missing: false });

function enumSignal(
  group: SignalGroup,
  signal: SignalName,
  table: Readonly<Record<string, number>>,
  scoresNothing: readonly string[],
  otherwisePoints?: number,
): EnumSignal {
  const lookup = new Map<string, Indicator>();
  const add = (value: string, indicator: Indicator): void => {
    lookup.set(value, indicator);
    lookup.set(value.toLowerCase(), indicator);
  };
  add('Unknown', MISSING);
  for (const value of scoresNothing) add(value, SCORES_NOTHING);
  for (const [value, points] of Object.entries(table)) {
    add(
      value,
      Object.freeze({ points, contribution: contribution(group, signal, value, points), missing: false }),
    );
  }
  if (otherwisePoints === undefined)
    return { lookup, otherwise: undefined, worst: worstOf(group, signal, table) };
  const other = contribution(group, signal, 'NotOnboarded', otherwisePoints);
  return {
    lookup,
    otherwise: Object.freeze({ points: otherwisePoints, contribution: other, missing: false }),
    worst: freezeContribution(group, signal, 'NotOnboarded', otherwisePoints, true),
  };
}

/**
 * "Assume-worst" charges a missing signal "the largest points of its group". We read "group" as the
 * signal's own indicator table in the profile (riskScore's Low/Medium/High, inactivity's five buckets,
 * criticalCves' maxPoints): the worst value the signal could have had. Reading it as the whole critical
 * or operational table would charge a missing exposureLevel more than exposureLevel High ever can, which
 * no observed value of that signal could produce. On a tie the more severe (later) indicator is named.
 */
function worstOf(
  group: SignalGroup,
  signal: SignalName,
  table: Readonly<Record<string, number>>,
): Contribution {
  let worstValue = '';
  let worstPoints = -1;
  for (const [value, points] of Object.entries(table)) {
    if (points >= worstPoints) {
      worstValue = value;
      worstPoints = points;
    }
  }
  return freezeContribution(group, signal, worstValue, Math.max(worstPoints, 0), true);
}

function contribution(group: SignalGroup, signal: SignalName, value: string, points: number): Contribution {
  return freezeContribution(group, signal, value, points, false);
}

function freezeContribution(
  group: SignalGroup,
  signal: SignalName,
  value: string,
  points: number,
  assumed: boolean,
): Contribution {
  return Object.freeze({ group, signal, value, points, assumed });
}
