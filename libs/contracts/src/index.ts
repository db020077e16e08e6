export { BAND_SCORES, BANDS, SIGNALS } from './model-terms';
export type { Band, SignalName } from './model-terms';
export { TENANT_GENERATION_HEADER, TENANT_REVISION_HEADER, numericHeader } from './tenant-headers';
export type {
  Cloud,
  Region,
  DefenderRegistration,
  RegistrationPush,
  TenantRegistration,
  SealedSecretRecord,
  TenantRecord,
  Machine,
  DeviceRecord,
  CycleBatchHeader,
  DeviceBatch,
  VulnerabilitySummary,
  EnrichedDevice,
  EnrichedBatch,
  VulnerabilityCorrection,
  DeviceIdentity,
  Contribution,
  SignalValue,
  ScoredDevice,
  ScoreBatch,
  VmsRiskScore,
  VmsRiskSummary,
  DeadLetter,
} from './types';
export {
  TENANT_ID_PATTERN,
  TENANT_ID_RULE,
  CLIENT_SECRET_RULE,
  GUID_PATTERN,
  PATTERN_RULES,
  CLOUDS,
  REGIONS,
} from './schema-rules';
export { ALL_SCHEMAS } from './schemas';
export {
  defenderRegistrationSchema,
  tenantRegistrationSchema,
  registrationPushSchema,
  tenantRecordSchema,
} from './tenant-schemas';
export {
  MAX_CYCLE_ID_LENGTH,
  deviceBatchSchema,
  enrichedBatchSchema,
  scoreBatchSchema,
} from './batch-schemas';
export { vmsRiskScoreSchema, vmsRiskSummarySchema } from './vms-schemas';
export { deadLetterSchema } from './dead-letter-schema';
export { ContractError, compileContracts, validateMessage, checkMessage } from './validate';
export type { ContractId, ContractTypes, RuleViolation } from './validate';
export { cycleBatchHeader } from './header';
export { DEVICE_RECORD_FIELDS, toDeviceRecord, vulnerabilitiesNotHeld } from './device-record';
export type { VulnerabilitiesNotHeld } from './device-record';
export { vmsRecord, vmsRecordHead, vmsRecordKey, vmsRecordKeyParts } from './vms-record';
export { MISSING_REASONS, missingReasonsOf, vulnerabilitiesMissingReason } from './missing-reasons';
export type { MissingReason } from './missing-reasons';
export { parseTimestampMs, subMillisecondOf } from './time';
export {
  ASSESSMENT_MARGIN_MS,
  NOT_IN_EXPORT_SNAPSHOT,
  fromExportSnapshot,
  generatedAt,
  listedBy,
} from './export-snapshot';
export type { ExportSnapshot, ExportedVulnerabilities } from './export-snapshot';
