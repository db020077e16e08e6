export { ScoringError, ProfileError } from './errors';
export type { ProfileViolation } from './errors';
export { DEFAULT_PROFILE, PROFILE_SCHEMA, parseProfile, profileHash, canonicalJson } from './profile';
export type { Profile, ProfileInput, MissingSignalsPolicy } from './profile';
export { CompiledProfile, compileProfile, SIGNALS, INACTIVITY_BUCKETS } from './compile';
export type { Contribution, SignalName, SignalGroup } from './compile';
export { BANDS, bandOf } from './band';
export type { Band } from './band';
export { scoreDevice } from './score';
export type { MachineRecord, ScoreResult, Signals, SignalObservation } from './score';
export { summariseVulnerabilities, readVulnerabilities } from './vulnerabilities';
export { TOP_CVE_IDS } from '@urs/contracts/vulnerabilities';
export type {
  VulnerabilityRecord,
  VulnerabilitySummary,
  CriticalCveCount,
  VulnerabilityInput,
  SkippedVulnerability,
} from './vulnerabilities';
export { parseTimestampMs } from './time';
