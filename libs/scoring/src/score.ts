import type { Band, SignalName } from '@urs/contracts';
import { bandOf } from './band';
import { CompiledProfile, compileProfile } from './compile';
import type { Contribution, EnumSignal } from './compile';
import { ScoringError } from './errors';
import type { Profile, ProfileInput } from './profile';
import { parseTimestampMs, subMillisecondOf } from './time';
import { summariseVulnerabilities } from './vulnerabilities';
import type { SkippedVulnerability, VulnerabilityInput } from './vulnerabilities';

/**
 * An MDE machine record as `GET /api/machines` returns it. Only the fields the model reads are named;
 * every other field (documented or not) is allowed and ignored. Enum values are matched
 * case-insensitively, and each field is also read in PascalCase (`RiskScore`), the spelling of some
 * exports; `onboardingStatus` also as `onboardingstatus`, the spelling of Microsoft's documentation.
 */
export interface MachineRecord {
  id?: string;
  riskScore?: string | null;
  exposureLevel?: string | null;
  /** Not in the documented entity, often absent or `NotSupported`. */
  defenderAvStatus?: string | null;
  onboardingStatus?: string | null;
  healthStatus?: string | null;
  /** ISO 8601 UTC, often with 7 fractional digits. */
  lastSeen?: string | null;
  /** Documented as a string, sent as a number. */
  rbacGroupId?: number | string | null;
  [field: string]: unknown;
}

/** A signal as observed: the raw value read (null when absent or not a string/number) and when. */
export interface SignalObservation {
  readonly value: string | number | null;
  /** When: the machine record's `lastSeen` for its fields, the input's `fetchedAt` for criticalCves; null if unknown. */
  readonly at: string | null;
}

/** `inactivity.value` is the whole days since lastSeen; `criticalCves.value` the count of critical CVEs. */
export type Signals = { readonly [K in SignalName]: SignalObservation };

export interface ScoreResult {
  /** 0–100, integer. */
  readonly score: number;
  readonly band: Band;
  /** C / 100, in [0, 1]. */
  readonly criticalScore: number;
  /** O / 100, in [0, 1]. */
  readonly operationalScore: number;
  /** Every matched indicator in signal order, including 0-point ones (e.g. inactivity lt1d). */
  readonly contributions: readonly Contribution[];
  /** The missing signals, in signal order. */
  readonly missing: readonly SignalName[];
  readonly signals: Signals;
  /** `profileHash` of the profile used. */
  readonly profileHash: string;
}

const DAY_MS = 86_400_000;

/**
 * Scores one device with the model of `scoring.md`: pure and deterministic (the same inputs give the same
 * result), integer arithmetic. `now` is the start of the cycle (epoch ms, Date or ISO 8601), against which
 * `lastSeen` is aged. Pass a CompiledProfile on hot paths; a plain profile is validated and compiled on
 * first use and cached per object. A vulnerability list is read as the pipeline reads it
 * (`readVulnerabilities`): a record it cannot read is skipped and told to `skipped`, and a list none of whose
 * records could be read leaves criticalCves missing. Throws a ScoringError (never retryable) for a machine
 * that is not an object, vulnerabilities that are neither a list, a summary nor null, or a summary counted with
 * another CVSS threshold.
 */
export function scoreDevice(
  machine: MachineRecord,
  vulnerabilities: VulnerabilityInput,
  profile: CompiledProfile | Profile | ProfileInput,
  now: number | Date | string,
  skipped?: SkippedVulnerability,
): ScoreResult {
  const p = profile instanceof CompiledProfile ? profile : compileProfile(profile);
  if (typeof machine !== 'object' || machine === null || Array.isArray(machine)) {
    throw new ScoringError('MACHINE_INVALID', 'machine: must be a JSON object (an MDE machine record)');
  }
  const nowMs = typeof now === 'number' ? now : toEpochMs(now);
  if (!Number.isFinite(nowMs))
    throw new ScoringError('NOW_INVALID', `now: must be a valid time (got ${String(now)})`);

  const m = machine as Record<string, unknown>;
  const contributions: Contribution[] = [];
  const missing: SignalName[] = [];
  const lastSeen = read(m, 'lastSeen', 'LastSeen');
  const observedAt = typeof lastSeen === 'string' ? lastSeen : null;

  const riskScore = read(m, 'riskScore', 'RiskScore');
  const exposureLevel = read(m, 'exposureLevel', 'ExposureLevel');
  const avStatus = read(m, 'defenderAvStatus', 'DefenderAvStatus');
  let onboarding = read(m, 'onboardingStatus', 'onboardingstatus');
  if (onboarding === undefined) onboarding = m.OnboardingStatus;
  const healthStatus = read(m, 'healthStatus', 'HealthStatus');

  let c = scoreEnum(p, p.riskScore, 'riskScore', riskScore, contributions, missing);
  c += scoreEnum(p, p.exposureLevel, 'exposureLevel', exposureLevel, contributions, missing);
  c += scoreEnum(p, p.avStatus, 'avStatus', avStatus, contributions, missing);
  c += scoreEnum(p, p.onboarding, 'onboarding', onboarding, contributions, missing);
  let o = scoreEnum(p, p.healthStatus, 'healthStatus', healthStatus, contributions, missing);

  // Inactivity: whole days d = floor(hours / 24) since lastSeen, a lastSeen in the future counting as 0.
  const seenMs = observedAt === null ? NaN : parseTimestampMs(observedAt);
  let days: number | null = null;
  if (observedAt !== null && seenMs === seenMs) {
    days = wholeDaysSince(seenMs, observedAt, nowMs, now);
    const bucket = p.inactivity[
      days === 0 ? 0 : days <= 3 ? 1 : days <= 7 ? 2 : days <= 14 ? 3 : 4
    ] as Contribution;
    contributions.push(bucket);
    o += bucket.points;
  } else {
    missing.push('inactivity');
    if (p.assumeWorst) {
      contributions.push(p.inactivityWorst);
      o += p.inactivityWorst.points;
    }
  }

  const cves = criticalCveCount(vulnerabilities, p.cvssThreshold, skipped);
  if (cves === null) {
    missing.push('criticalCves');
    if (p.assumeWorst) {
      contributions.push(p.criticalCvesWorst);
      o += p.criticalCvesWorst.points;
    }
  } else if (cves > 0) {
    const points = Math.min(p.maxCvePoints, cves * p.pointsPerCve);
    contributions.push({ group: 'operational', signal: 'criticalCves', value: cves, points, assumed: false });
    o += points;
  }

  const C = c > 100 ? 100 : c;
  const O = o > 100 ? 100 : o;
  // round_half_up(x / 100) for a non-negative integer x is floor((x + 50) / 100): exact in doubles up to 2^53.
  const score = Math.floor((C * p.criticalWeight + O * p.operationalWeight + 50) / 100);
  return {
    score,
    band: bandOf(score),
    criticalScore: C / 100,
    operationalScore: O / 100,
    contributions,
    missing,
    signals: {
      riskScore: { value: observed(riskScore), at: observedAt },
      exposureLevel: { value: observed(exposureLevel), at: observedAt },
      avStatus: { value: observed(avStatus), at: observedAt },
      onboarding: { value: observed(onboarding), at: observedAt },
      healthStatus: { value: observed(healthStatus), at: observedAt },
      inactivity: { value: days, at: observedAt },
      criticalCves: { value: cves, at: fetchedAtOf(vulnerabilities) },
    },
    profileHash: p.hash,
  };
}

/** Scores one enum signal: adds its contribution (if any) and returns its points, or records it missing. */
function scoreEnum(
  p: CompiledProfile,
  signal: EnumSignal,
  name: SignalName,
  raw: unknown,
  contributions: Contribution[],
  missing: SignalName[],
): number {
  if (typeof raw === 'string' && raw.length > 0) {
    // The exact spelling first: MDE sends the canonical case, and it spares a toLowerCase per field.
    let indicator = signal.lookup.get(raw) ?? signal.lookup.get(raw.toLowerCase());
    if (indicator === undefined && signal.otherwise !== undefined && raw.trim().length > 0)
      indicator = signal.otherwise;
    if (indicator !== undefined && !indicator.missing) {
      if (indicator.contribution !== null) contributions.push(indicator.contribution);
      return indicator.points;
    }
  }
  missing.push(name);
  if (!p.assumeWorst) return 0;
  contributions.push(signal.worst);
  return signal.worst.points;
}

/** The criticalCves count, or null when the vulnerabilities could not be fetched (or none could be read). */
function criticalCveCount(
  input: VulnerabilityInput,
  cvssThreshold: number,
  skipped: SkippedVulnerability | undefined,
): number | null {
  if (input === null || input === undefined) return null;
  if (Array.isArray(input))
    return summariseVulnerabilities(input, cvssThreshold, skipped)?.criticalCveCount ?? null;
  const summary = input as { criticalCveCount?: unknown; cvssThreshold?: unknown };
  if (
    typeof summary !== 'object' ||
    !Number.isInteger(summary.criticalCveCount) ||
    (summary.criticalCveCount as number) < 0
  ) {
    throw new ScoringError(
      'VULNERABILITY_INVALID',
      'vulnerabilities: must be an array of MDE vulnerability records, a summary with an integer criticalCveCount ≥ 0, or null',
    );
  }
  if (summary.cvssThreshold !== undefined && summary.cvssThreshold !== cvssThreshold) {
    throw new ScoringError(
      'VULNERABILITY_SUMMARY_MISMATCH',
      `vulnerabilities.cvssThreshold: the summary counted CVEs with cvssV3 ≥ ${String(summary.cvssThreshold)}, ` +
        `the profile asks for ≥ ${cvssThreshold}; summarise again with the profile's threshold`,
    );
  }
  return summary.criticalCveCount as number;
}

function fetchedAtOf(input: VulnerabilityInput): string | null {
  if (input === null || input === undefined || Array.isArray(input)) return null;
  const fetchedAt = (input as { fetchedAt?: unknown }).fetchedAt;
  return typeof fetchedAt === 'string' ? fetchedAt : null;
}

/**
 * Whole days from lastSeen to now, 0 when lastSeen is later, both read to the millisecond. At an exact
 * number of days in milliseconds the digits past the millisecond decide: MDE writes lastSeen to 100 ns
 * (`…:00.1234567Z`), and a device seen 100 ns after now's millisecond a day before has not been away a
 * whole day.
 */
function wholeDaysSince(
  seenMs: number,
  seenText: string,
  nowMs: number,
  now: number | Date | string,
): number {
  const elapsedMs = nowMs - seenMs;
  if (elapsedMs <= 0) return 0;
  const days = Math.floor(elapsedMs / DAY_MS);
  if (elapsedMs % DAY_MS !== 0) return days;
  const nowSubMs = typeof now === 'string' ? subMillisecondOf(now) : 0;
  return subMillisecondOf(seenText) > nowSubMs ? days - 1 : days;
}

function read(m: Record<string, unknown>, key: string, alternative: string): unknown {
  const value = m[key];
  return value !== undefined ? value : m[alternative];
}

function observed(raw: unknown): string | number | null {
  return typeof raw === 'string' || typeof raw === 'number' ? raw : null;
}

function toEpochMs(now: Date | string): number {
  if (now instanceof Date) return now.getTime();
  return typeof now === 'string' ? parseTimestampMs(now) : NaN;
}
