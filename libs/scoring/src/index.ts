export { ScoringError, ProfileError } from './errors';
export type { ProfileViolation } from './errors';
export { DEFAULT_PROFILE, PROFILE_SCHEMA, parseProfile, profileHash, canonicalJson } from './profile';
export type { Profile, ProfileInput, MissingSignalsPolicy } from './profile';
export { CompiledProfile, compileProfile, INACTIVITY_BUCKETS } from './compile';
export type { Contribution, SignalGroup } from './compile';
export { SIGNALS } from '@urs/contracts';
export type { SignalName } from '@urs/contracts';
export { bandOf } from './band';
export { BANDS } from '@urs/contracts';
export type { Band } from '@urs/contracts';
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
