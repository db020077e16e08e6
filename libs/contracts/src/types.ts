import type { MissingReason } from './missing-reasons';
import type { Band, SignalName } from './model-terms';

/**
 * The messages on every topic. Each has a JSON Schema in ./schemas (the source of truth, validated on
 * produce and on consume) and the TypeScript shape here. Times are ISO-8601 UTC strings.
 */

export type Cloud = 'commercial' | 'gcc' | 'gcc-high' | 'dod';
export type Region = 'us' | 'eu' | 'uk' | 'au' | 'swa' | 'ina' | 'aea';

/** One tenant's Defender settings as Director or an admin gives them (secret in clear, input only). */
export interface DefenderRegistration {
  enabled: boolean;
  azureTenantId: string;
  clientId: string;
  clientSecret: string;
  /** Whole minutes, 10–1440. */
  pollIntervalMinutes: number;
  /** null or absent: `commercial`. */
  cloud?: Cloud | null;
  region?: Region | null;
  /** A partial ZTA profile; what it leaves out takes the default (validated by @urs/scoring). */
  riskProfile?: Record<string, unknown> | null;
}

/** `urs.registration`: Director's bulk push. */
export interface RegistrationPush {
  schemaVersion: 1;
  /** Director's monotonically increasing push number; an older one than the last applied is ignored. */
  generation: number;
  /** `full`: the complete set (tenants missing from it are disabled); `delta`: only these tenants. */
  mode: 'full' | 'delta';
  /** Items are validated one by one (see TenantRegistration), so one bad tenant does not reject the push. */
  tenants: unknown[];
}

export interface TenantRegistration {
  tenantId: string;
  defender: DefenderRegistration;
}

/** A client secret at rest (AES-256-GCM; see @urs/secrets). */
export interface SealedSecretRecord {
  alg: 'A256GCM';
  keyId: string;
  iv: string;
  tag: string;
  ciphertext: string;
}

/** `urs.tenants` (compacted, key tenantId; a null value deletes): the validated tenant record. */
export interface TenantRecord {
  schemaVersion: 1;
  tenantId: string;
  /** Increases with every change of this tenant; consumers ignore a record older than the one they hold. */
  revision: number;
  /**
   * When the registration last changed (ISO): Redis's time when the revision was assigned, one clock for every
   * registrar replica (a re-seal keeps it).
   */
  updatedAt: string;
  source: 'director' | 'rest';
  /**
   * The generation of Director's last write of this tenant, kept by REST writes over it (a full push leaving
   * the tenant out disables it); absent for a tenant only ever registered over REST.
   */
  generation?: number;
  enabled: boolean;
  /** Why the tenant is disabled, when it is (e.g. "missing from Director full push 42"). */
  disabledReason?: string;
  defender: {
    azureTenantId: string;
    clientId: string;
    clientSecret: SealedSecretRecord;
    pollIntervalMinutes: number;
    cloud: Cloud;
    region: Region | null;
    riskProfile: Record<string, unknown> | null;
  };
}

/**
 * A device as read from `GET /api/machines`, normalised to the documented camelCase names. Only the
 * fields the pipeline uses are listed; others may be present.
 */
export interface Machine {
  id: string;
  computerDnsName?: string | null;
  aadDeviceId?: string | null;
  lastIpAddress?: string | null;
  lastExternalIpAddress?: string | null;
  ipAddresses?:
    | {
        ipAddress?: string | null;
        macAddress?: string | null;
        type?: string | null;
        operationalStatus?: string | null;
      }[]
    | null;
  machineTags?: string[] | null;
  rbacGroupName?: string | null;
  rbacGroupId?: number | string | null;
  osPlatform?: string | null;
  riskScore?: string | null;
  exposureLevel?: string | null;
  defenderAvStatus?: string | null;
  onboardingStatus?: string | null;
  healthStatus?: string | null;
  firstSeen?: string | null;
  lastSeen?: string | null;
  deviceValue?: string | null;
  mergedIntoMachineId?: string | null;
  isExcluded?: boolean | null;
  [field: string]: unknown;
}

/**
 * A device as it travels on `urs.device-batches` and `urs.devices-enriched`: a Machine cut down by
 * `toDeviceRecord` to its id, the scoring inputs and the identity VMS needs. A consumer still accepts
 * (and ignores) further machine fields, which a full Machine from an older poller carries.
 */
export type DeviceRecord = Pick<
  Machine,
  | 'id'
  | 'riskScore'
  | 'exposureLevel'
  | 'defenderAvStatus'
  | 'onboardingStatus'
  | 'healthStatus'
  | 'lastSeen'
  | 'firstSeen'
  | 'isExcluded'
  | 'computerDnsName'
  | 'aadDeviceId'
  | 'lastIpAddress'
  | 'lastExternalIpAddress'
  | 'ipAddresses'
  | 'machineTags'
  | 'rbacGroupName'
>;

/** Common header of the per-cycle batch messages. */
export interface CycleBatchHeader {
  schemaVersion: 1;
  tenantId: string;
  cycleId: string;
  /** When the cycle started: the reference time for inactivity. */
  cycleStartedAt: string;
  /** 0-based position of this batch in the cycle. */
  batchIndex: number;
  /** Set on the cycle's last batch, with the totals. */
  lastBatch: boolean;
  totalBatches?: number;
  totalDevices?: number;
}

/** `urs.device-batches` (key tenantId): up to 500 devices of one cycle, from the poller. */
export interface DeviceBatch extends CycleBatchHeader {
  vulnerabilityMode: 'per-device' | 'bulk';
  /** The tenant's CVSS threshold when the cycle started (criticalCves counts at or above it). */
  cvssThreshold: number;
  /**
   * The hash of the tenant's risk profile when the cycle started (the `profileHash` its devices are scored
   * with). Absent from the batches of an older poller.
   */
  profileHash?: string;
  devices: DeviceRecord[];
}

/** A device's vulnerabilities, summarised at the cycle's CVSS threshold. */
export interface VulnerabilitySummary {
  /** Distinct CVE ids with cvssV3 ≥ threshold. */
  criticalCveCount: number;
  /** Distinct CVE ids in all. */
  totalCveCount: number;
  maxCvss: number | null;
  cvssThreshold: number;
  /** Up to 10 CVE ids, highest CVSS first. */
  topCveIds: string[];
}

export interface EnrichedDevice {
  machine: DeviceRecord;
  /** null when the vulnerabilities could not be fetched (a missing signal). */
  vulnerabilities: VulnerabilitySummary | null;
  /** Why `vulnerabilities` is null. */
  fetchError?: { code: string; message: string };
}

/** `urs.devices-enriched` (key tenantId): a device batch with each device's vulnerability summary. */
export interface EnrichedBatch extends CycleBatchHeader {
  vulnerabilityMode: 'per-device' | 'bulk';
  /** When the batch's last vulnerability response arrived. */
  collectedAt: string;
  /** The device batch's `profileHash`: the risk profile the cycle started with. */
  profileHash?: string;
  devices: EnrichedDevice[];
  /**
   * Devices of earlier batches of the cycle with their vulnerabilities as the cycle's own bulk export
   * gives them: those batches were enriched from the tenant's previous export, and these summaries differ
   * from it. Only on the correction batches a bulk cycle adds after its last batch (`devices` empty).
   */
  corrections?: VulnerabilityCorrection[];
}

/** A device's vulnerabilities as its cycle's bulk export gives them, in place of the ones it was scored with. */
export interface VulnerabilityCorrection {
  deviceId: string;
  /** null when the export gives none (none of its CVE rows could be read), as for `EnrichedDevice`. */
  vulnerabilities: VulnerabilitySummary | null;
  /** Why `vulnerabilities` is null. */
  fetchError?: { code: string; message: string };
}

/** What VMS needs to enforce on a device. */
export interface DeviceIdentity {
  computerDnsName: string | null;
  aadDeviceId: string | null;
  lastIpAddress: string | null;
  lastExternalIpAddress: string | null;
  ipAddresses: {
    ipAddress?: string | null;
    macAddress?: string | null;
    type?: string | null;
    operationalStatus?: string | null;
  }[];
  machineTags: string[];
  rbacGroupName: string | null;
}

export interface Contribution {
  group: 'critical' | 'operational';
  signal: SignalName;
  value: string | number;
  points: number;
  /** True when the points are charged for a missing signal under `assume-worst`, not observed. */
  assumed: boolean;
}

export interface SignalValue {
  value: string | number | null;
  /** When the value was observed (e.g. lastSeen), if known. */
  at?: string | null;
}

/** A scored device, as the scorer emits it and the publisher forwards it. */
export interface ScoredDevice extends DeviceIdentity {
  deviceId: string;
  score: number;
  band: Band;
  criticalScore: number;
  operationalScore: number;
  contributions: Contribution[];
  missing: SignalName[];
  signals: Record<string, SignalValue>;
  profileHash: string;
  vulnerabilities: VulnerabilitySummary | null;
  /**
   * Why each signal of `missing` is missing, by signal (see MISSING_REASONS): a code, never an error's text.
   * Absent when nothing is missing, and from the records of an older scorer.
   */
  missingReasons?: Partial<Record<SignalName, MissingReason>>;
}

/** `urs.device-scores` (key tenantId): a scored batch. */
export interface ScoreBatch extends CycleBatchHeader {
  collectedAt: string;
  scoredAt: string;
  devices: ScoredDevice[];
  /**
   * On a correction batch: what its devices counted in the cycle before they were scored again (their
   * bands, and how many were incomplete), so the cycle's summary moves them instead of counting them twice.
   */
  replaces?: { bands: Partial<Record<Band, number>>; incomplete: number };
}

/** `vms.risk-scores` (compacted, key `{tenantId}/{deviceId}`; a null value = the device is gone). */
export interface VmsRiskScore extends ScoredDevice {
  schemaVersion: 1;
  tenantId: string;
  cycleId: string;
  computedAt: string;
}

/** `vms.risk-summary` (key tenantId): one per completed or deadline-closed cycle. */
export interface VmsRiskSummary {
  schemaVersion: 1;
  tenantId: string;
  cycleId: string;
  /** `partial`: closed by its deadline before every device was scored. */
  status: 'complete' | 'partial';
  cycleStartedAt: string;
  /** When the cycle's last vulnerability response arrived. */
  collectedAt: string | null;
  publishedAt: string;
  devices: {
    /** Devices the poller listed. */
    total: number;
    scored: number;
    /** Scored with at least one missing signal (e.g. vulnerabilities not fetched). */
    incomplete: number;
    /** Listed but never scored (only in a partial cycle). */
    failed: number;
  };
  bands: Record<Band, number>;
  published: { changed: number; snapshot: boolean; tombstones: number };
  timings: { collectMs: number; scoreToPublishMs: number; cycleMs: number };
}

/** `urs.dlq`: what could not be processed, with why. Secrets in the payload are redacted. */
export interface DeadLetter {
  schemaVersion: 1;
  service: string;
  sourceTopic: string;
  partition: number;
  offset: string;
  key: string | null;
  error: { code: string; message: string };
  /** The message value as text (UTF-8), secrets redacted, cut at 256 KiB. */
  payload: string | null;
  failedAt: string;
}
