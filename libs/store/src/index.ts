export { createRedis, closeRedis, StoreError } from './client';
export type { RedisClientOptions } from './client';
export { createTenantStore, TENANTS_NOT_REBUILT, tenantsNotRebuilt } from './tenants';
export type { RegistrationRefusal, TenantLookup, TenantStore, TenantStatus } from './tenants';
export { createCycleStore } from './cycles';
export type { BatchClaimAnswer, CycleStore, CycleState, CycleAbandonment } from './cycles';
export { lostBatchOf, recordLostBatches } from './lost-batches';
export type { LostBatch } from './lost-batches';
export { createScoreStore, scoreStoreFor } from './scores';
export type {
  ScoreStore,
  StoredScore,
  ReplacedScore,
  ScoreHistoryEntry,
  SaveScoresResult,
  ListScoresOptions,
  ScoreStoreOptions,
  TenantScoresRemoval,
} from './scores';
export { createPublishedStore, TENANT_LEASE_LOST, TenantLeaseLostError } from './published';
export type {
  CompletedCycle,
  PublishedStore,
  PublishedStoreOptions,
  TenantLease,
  TombstoneHold,
} from './published';
export type { PublishedDevice, DeviceScoreRef, PublishOptions } from './published-devices';
export { RESTORED_SEEN_AT } from './published-rebuild';
export type { PublishedRebuild, VmsKeyState } from './published-rebuild';
export { createBulkVulnerabilityCache } from './vulnerability-cache';
export type {
  BulkVulnerabilityCache,
  BulkExportState,
  LatestExport,
  LatestExportOf,
  PinnedExport,
} from './vulnerability-cache';
export { createPollScheduleStore } from './poll-schedule';
export type {
  CycleBeginRefusal,
  PollScheduleStore,
  PollLease,
  PollSchedule,
  UnrecordedListing,
} from './poll-schedule';
export { createRegistrarStateStore } from './registrar-state';
export type { RegistrarStateStore, RevisionStamp } from './registrar-state';
export { createDeadLetterLedger } from './dead-letters';
export type { DeadLetterLedgerOptions } from './dead-letters';
export { createAnsweredCalls } from './answered-calls';
export type { AnsweredCall, AnsweredCalls, KeptAnswers } from './answered-calls';
export { createKeyFingerprintStore } from './key-fingerprints';
export type { KeyFingerprintStore } from './key-fingerprints';
