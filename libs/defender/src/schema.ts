import Ajv, { type ValidateFunction } from 'ajv';
import type { Machine } from '@urs/contracts';
import { readCvss, unreadableScore } from '@urs/contracts/vulnerabilities';
import { BULK_UNSCORED, VULNERABILITY_UNSCORED, softenSignals, softenUnscored } from './soften';

/**
 * Tolerant reading of Microsoft's records: keys are normalised to the documented camelCase (the API and
 * its examples mix `onboardingstatus`, PascalCase `CveSupportability`, `EPSS`), known enum values are
 * normalised to their documented case, CVE ids to upper case, and undocumented fields are kept. A scored signal of
 * another shape is missing, not an error (`softenSignals`), and so is a field of a vulnerability nothing scores
 * (`softenUnscored`). A record is invalid only when another field we rely on has the wrong type: then that one
 * record is reported and skipped.
 */

const MACHINE_KEYS = [
  'id',
  'computerDnsName',
  'firstSeen',
  'lastSeen',
  'osPlatform',
  'onboardingStatus',
  'osProcessor',
  'version',
  'osBuild',
  'lastIpAddress',
  'lastExternalIpAddress',
  'healthStatus',
  'rbacGroupName',
  'rbacGroupId',
  'riskScore',
  'aadDeviceId',
  'machineTags',
  'exposureLevel',
  'deviceValue',
  'ipAddresses',
  'osArchitecture',
  'isAadJoined',
  'agentVersion',
  'osVersion',
  'mergedIntoMachineId',
  'isPotentialDuplication',
  'isExcluded',
  'exclusionReason',
  'managedBy',
  'managedByStatus',
  'vmMetadata',
  'defenderAvStatus',
];
const IP_KEYS = ['ipAddress', 'macAddress', 'type', 'operationalStatus'];
const VULNERABILITY_KEYS = [
  'id',
  'name',
  'description',
  'severity',
  'cvssV3',
  'cvssVector',
  'exposedMachines',
  'publishedOn',
  'updatedOn',
  'publicExploit',
  'exploitVerified',
  'exploitInKit',
  'exploitTypes',
  'exploitUris',
  'cveSupportability',
  'epss',
];
const BULK_KEYS = [
  'id',
  'deviceId',
  'deviceName',
  'rbacGroupName',
  'osPlatform',
  'osVersion',
  'osArchitecture',
  'softwareVendor',
  'softwareName',
  'softwareVersion',
  'cveId',
  'vulnerabilitySeverityLevel',
  'cvssScore',
  'recommendedSecurityUpdate',
  'recommendedSecurityUpdateId',
  'recommendedSecurityUpdateUrl',
  'diskPaths',
  'registryPaths',
  'firstSeenTimestamp',
  'lastSeenTimestamp',
  'exploitabilityLevel',
  'recommendationReference',
  'securityUpdateAvailable',
];

function keyMap(keys: string[]): Map<string, string> {
  return new Map(keys.map((k) => [k.toLowerCase(), k]));
}
const MACHINE_KEY_MAP = keyMap(MACHINE_KEYS);
const IP_KEY_MAP = keyMap(IP_KEYS);
const VULNERABILITY_KEY_MAP = keyMap(VULNERABILITY_KEYS);
const BULK_KEY_MAP = keyMap(BULK_KEYS);
/** The documented keys of each key map, exactly as documented. */
const DOCUMENTED = new Map(
  [MACHINE_KEY_MAP, IP_KEY_MAP, VULNERABILITY_KEY_MAP, BULK_KEY_MAP].map((map) => [
    map,
    new Set(map.values()),
  ]),
);

/** A documented key for any casing; an unknown PascalCase key gets a lower-case first letter. */
function normaliseKey(key: string, known: Map<string, string>): string {
  const documented = known.get(key.toLowerCase());
  if (documented) return documented;
  if (/^[A-Z0-9_]+$/.test(key)) return key.toLowerCase();
  return key.charAt(0).toLowerCase() + key.slice(1);
}

/** Whether every key is already as documented (the usual case): then the record needs no copy. */
function keysAreDocumented(record: Record<string, unknown>, documented: ReadonlySet<string>): boolean {
  for (const key in record) if (!documented.has(key)) return false;
  return true;
}

/**
 * The record with documented keys and without `@odata.` annotations. A record (freshly parsed, owned
 * by the caller) whose keys are all documented is returned as it is: copying each of a 10,000-device
 * page's records only to rename nothing doubled the listing's garbage.
 */
function normaliseKeys(record: Record<string, unknown>, known: Map<string, string>): Record<string, unknown> {
  if (keysAreDocumented(record, DOCUMENTED.get(known) as ReadonlySet<string>)) return record;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(record)) {
    if (key.startsWith('@odata.')) continue;
    out[normaliseKey(key, known)] = value;
  }
  return out;
}

const ENUMS: Record<string, string[]> = {
  healthStatus: [
    'Active',
    'Inactive',
    'ImpairedCommunication',
    'NoSensorData',
    'NoSensorDataImpairedCommunication',
    'Unknown',
  ],
  riskScore: ['None', 'Informational', 'Low', 'Medium', 'High'],
  exposureLevel: ['None', 'Low', 'Medium', 'High'],
  deviceValue: ['Normal', 'Low', 'High'],
  onboardingStatus: ['Onboarded', 'CanBeOnboarded', 'Unsupported', 'InsufficientInfo'],
  defenderAvStatus: ['NotReporting', 'Disabled', 'NotUpdated', 'Updated', 'Unknown', 'NotSupported'],
  severity: ['Low', 'Medium', 'High', 'Critical'],
  vulnerabilitySeverityLevel: ['Low', 'Medium', 'High', 'Critical'],
  exploitabilityLevel: ['NoExploit', 'ExploitIsPublic', 'ExploitIsVerified', 'ExploitIsInKit'],
};
const ENUM_MAPS = new Map(Object.entries(ENUMS).map(([field, values]) => [field, keyMap(values)]));

/** Documented case for known enum values (`onboarded` → `Onboarded`); unknown values are kept as sent. */
function normaliseEnums(record: Record<string, unknown>): void {
  for (const [field, values] of ENUM_MAPS) {
    const value = record[field];
    if (typeof value === 'string') record[field] = values.get(value.toLowerCase()) ?? value;
  }
}

const nullable = (type: string | string[]): { type: string[] } => ({
  type: [...(Array.isArray(type) ? type : [type]), 'null'],
});

const MACHINE_SCHEMA = {
  type: 'object',
  required: ['id'],
  properties: {
    id: { type: 'string', minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._-]+$' },
    computerDnsName: nullable('string'),
    firstSeen: nullable('string'),
    lastSeen: nullable('string'),
    osPlatform: nullable('string'),
    onboardingStatus: nullable('string'),
    version: nullable('string'),
    osBuild: nullable(['number', 'string']),
    lastIpAddress: nullable('string'),
    lastExternalIpAddress: nullable('string'),
    healthStatus: nullable('string'),
    rbacGroupName: nullable('string'),
    rbacGroupId: nullable(['number', 'string']),
    riskScore: nullable('string'),
    aadDeviceId: nullable('string'),
    machineTags: { ...nullable('array'), items: { type: 'string' } },
    exposureLevel: nullable('string'),
    deviceValue: nullable('string'),
    defenderAvStatus: nullable('string'),
    ipAddresses: {
      ...nullable('array'),
      items: {
        type: 'object',
        properties: {
          ipAddress: nullable('string'),
          macAddress: nullable('string'),
          type: nullable('string'),
          operationalStatus: nullable('string'),
        },
      },
    },
    mergedIntoMachineId: nullable('string'),
    isExcluded: nullable('boolean'),
    isPotentialDuplication: nullable('boolean'),
    isAadJoined: nullable('boolean'),
  },
} as const;

/** What the score reads of a vulnerability; its other fields are softened (VULNERABILITY_UNSCORED). */
const VULNERABILITY_SCHEMA = {
  type: 'object',
  required: ['id'],
  properties: {
    id: { type: 'string', minLength: 1 },
    cvssV3: nullable('number'),
  },
} as const;

/** What the score reads of a bulk row; its other fields are softened (BULK_UNSCORED). */
const BULK_SCHEMA = {
  type: 'object',
  required: ['deviceId'],
  properties: {
    deviceId: { type: 'string', minLength: 1 },
    cveId: nullable('string'),
    cvssScore: nullable('number'),
  },
} as const;

const ajv = new Ajv({ allErrors: false, allowUnionTypes: true, strict: false });
const validateMachineSchema = ajv.compile(MACHINE_SCHEMA);
const validateVulnerabilitySchema = ajv.compile(VULNERABILITY_SCHEMA);
const validateBulkSchema = ajv.compile(BULK_SCHEMA);

/** A device as documented by `api/machine.md`, plus whatever else the API sent (normalised keys). */
export interface MachineRecord {
  id: string;
  computerDnsName?: string | null;
  firstSeen?: string | null;
  lastSeen?: string | null;
  osPlatform?: string | null;
  onboardingStatus?: string | null;
  version?: string | null;
  osBuild?: number | string | null;
  lastIpAddress?: string | null;
  lastExternalIpAddress?: string | null;
  healthStatus?: string | null;
  rbacGroupName?: string | null;
  rbacGroupId?: number | string | null;
  riskScore?: string | null;
  aadDeviceId?: string | null;
  machineTags?: string[] | null;
  exposureLevel?: string | null;
  deviceValue?: string | null;
  defenderAvStatus?: string | null;
  ipAddresses?:
    | {
        ipAddress?: string | null;
        macAddress?: string | null;
        type?: string | null;
        operationalStatus?: string | null;
      }[]
    | null;
  osArchitecture?: string | null;
  mergedIntoMachineId?: string | null;
  isExcluded?: boolean | null;
  [field: string]: unknown;
}

/** A vulnerability of one device (`PublicVulnerabilityDto`), normalised; `id` is the CVE id. */
export interface Vulnerability {
  id: string;
  name?: string | null;
  severity?: string | null;
  cvssV3?: number | null;
  publicExploit?: boolean | null;
  exploitVerified?: boolean | null;
  exploitInKit?: boolean | null;
  [field: string]: unknown;
}

/** One row of `SoftwareVulnerabilitiesByMachine`. */
export interface SoftwareVulnerabilityRow {
  deviceId: string;
  cveId?: string | null;
  cvssScore?: number | null;
  vulnerabilitySeverityLevel?: string | null;
  exploitabilityLevel?: string | null;
  [field: string]: unknown;
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; reason: string };

function describe(validate: ValidateFunction): string {
  const error = validate.errors?.[0];
  if (!error) return 'invalid record';
  const field = error.instancePath
    ? error.instancePath.slice(1).replace(/\//g, '.')
    : ((error.params as { missingProperty?: string }).missingProperty ?? 'record');
  return `${field} ${error.message ?? 'is invalid'}`;
}

function asObject(raw: unknown): Record<string, unknown> | undefined {
  return typeof raw === 'object' && raw !== null && !Array.isArray(raw)
    ? (raw as Record<string, unknown>)
    : undefined;
}

/** Normalises and validates one machine record; `raw` (freshly parsed) may be normalised in place and returned. */
export function parseMachine(raw: unknown): ParseResult<MachineRecord> {
  const object = asObject(raw);
  if (!object) return { ok: false, reason: 'record is not an object' };
  const record = normaliseKeys(object, MACHINE_KEY_MAP);
  softenSignals(record);
  normaliseEnums(record);
  if (Array.isArray(record.ipAddresses)) {
    record.ipAddresses = record.ipAddresses.map((item) => {
      const ip = asObject(item);
      return ip ? normaliseKeys(ip, IP_KEY_MAP) : item;
    });
  }
  if (!validateMachineSchema(record)) return { ok: false, reason: describe(validateMachineSchema) };
  return { ok: true, value: record as MachineRecord };
}

/**
 * A machine record read by `parseMachine` as the pipeline's contracts type a listed device (`Machine`): the same
 * documented fields, normalised and schema-checked here, which the two types spell apart. The one place that
 * says so, for the poller's listing and the CLI's alike.
 */
export function listedMachine(record: MachineRecord): Machine {
  return record as unknown as Machine;
}

/**
 * A CVE id in upper case, as CVE ids are written (`cve-2024-1234` → `CVE-2024-1234`). Both vulnerability
 * endpoints go through here, so every CVE id in the system has one spelling: the same CVE sent in another
 * case (on another product's row, say) is merged and counted once, and names the same CVE in a summary.
 */
function normaliseCveId(id: string): string {
  return id.toUpperCase();
}

/** Normalises and validates one vulnerability of the per-device endpoint; `raw` (freshly parsed) may be normalised in place and returned. */
export function parseVulnerability(raw: unknown): ParseResult<Vulnerability> {
  const object = asObject(raw);
  if (!object) return { ok: false, reason: 'record is not an object' };
  const record = normaliseKeys(object, VULNERABILITY_KEY_MAP);
  softenUnscored(record, VULNERABILITY_UNSCORED);
  normaliseEnums(record);
  if (!readScoreField(record, 'cvssV3'))
    return { ok: false, reason: unreadableScore('cvssV3', record['cvssV3']) };
  if (!validateVulnerabilitySchema(record))
    return { ok: false, reason: describe(validateVulnerabilitySchema) };
  const vulnerability = record as Vulnerability;
  vulnerability.id = normaliseCveId(vulnerability.id);
  return { ok: true, value: vulnerability };
}

/** Puts the score `field` holds as `readCvss` reads it; false when it is unreadable. */
function readScoreField(record: Record<string, unknown>, field: 'cvssV3' | 'cvssScore'): boolean {
  const value = record[field];
  const score = readCvss(value);
  if (score === undefined) return false;
  if (score !== value && value !== undefined) record[field] = score;
  return true;
}

/** Normalises and validates one row of the bulk export; `raw` (freshly parsed) may be normalised in place and returned. */
export function parseSoftwareVulnerabilityRow(raw: unknown): ParseResult<SoftwareVulnerabilityRow> {
  const object = asObject(raw);
  if (!object) return { ok: false, reason: 'record is not an object' };
  const record = normaliseKeys(object, BULK_KEY_MAP);
  softenUnscored(record, BULK_UNSCORED);
  normaliseEnums(record);
  if (!readScoreField(record, 'cvssScore'))
    return { ok: false, reason: unreadableScore('cvssScore', record['cvssScore']) };
  if (!validateBulkSchema(record)) return { ok: false, reason: describe(validateBulkSchema) };
  return { ok: true, value: record as SoftwareVulnerabilityRow };
}

/**
 * The device an export row names (its `deviceId`, text that is not empty, the key in any case), whether the
 * row is read or skipped as invalid: a skipped row still tells that its device had a row.
 */
export function bulkRowDeviceId(raw: unknown): string | undefined {
  const object = asObject(raw);
  const deviceId = object && normaliseKeys(object, BULK_KEY_MAP)['deviceId'];
  return typeof deviceId === 'string' && deviceId !== '' ? deviceId : undefined;
}

/**
 * The per-device shape of a bulk row, so the scorer sees one vulnerability type whichever endpoint
 * produced it: `cveId` → `id` (upper case), `cvssScore` → `cvssV3`, `vulnerabilitySeverityLevel` → `severity`,
 * `exploitabilityLevel` → the exploit flags. Rows without a CVE (software only) give undefined.
 */
export function vulnerabilityFromRow(row: SoftwareVulnerabilityRow): Vulnerability | undefined {
  if (!row.cveId) return undefined;
  const level = row.exploitabilityLevel ?? undefined;
  const vulnerability: Vulnerability = {
    id: normaliseCveId(row.cveId),
    severity: row.vulnerabilitySeverityLevel ?? null,
    cvssV3: row.cvssScore ?? null,
  };
  if (level) {
    vulnerability.publicExploit = level !== 'NoExploit';
    vulnerability.exploitVerified = level === 'ExploitIsVerified' || level === 'ExploitIsInKit';
    vulnerability.exploitInKit = level === 'ExploitIsInKit';
  }
  return vulnerability;
}
