import { VMS_IDENTITY_FIELDS } from './device-record';

/**
 * JSON Schemas (draft 2020-12 subset understood by ajv) of every message. Internal messages are
 * strict where the pipeline depends on a field and open (`additionalProperties: true`) where they carry
 * Microsoft's records, which gain fields without notice.
 */

export const TENANT_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';
export const GUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
const DIGITS_PATTERN = '^\\d+$';
/**
 * A client secret as Entra ID shows it: no white space at either end (a pasted line break, a padded cell), no
 * control character (C0, DEL, C1) and no unpaired UTF-16 surrogate (ajv compiles patterns with the `u` flag,
 * where one is a code point of its own). Such a secret is never Entra's: sign-in would fail on it later, and an
 * unpaired surrogate does not survive sealing (UTF-8 makes it U+FFFD), so the stored secret never equals the
 * one sent and every identical push would count as a change. Inner spaces and letters beyond ASCII pass.
 */
const CLIENT_SECRET_PATTERN = '^(?!\\s)[^\\u0000-\\u001F\\u007F-\\u009F\\uD800-\\uDFFF]*(?<!\\s)$';
export const CLIENT_SECRET_RULE =
  "must be the secret's Value as Entra ID shows it: no spaces or line breaks at its start or end, " +
  'no control characters, no unpaired UTF-16 surrogates';
/** The rule of a tenant id in words, wherever one is refused (a push, a REST body or path). */
export const TENANT_ID_RULE =
  'must be 1–64 letters, digits, dots, dashes or underscores, starting with a letter or digit';
/**
 * Each pattern of these schemas in words: a rejection names the rule an administrator can follow, never the
 * regular expression. A new pattern gets its words here (a test checks that every pattern has them).
 */
export const PATTERN_RULES: ReadonlyMap<string, string> = new Map([
  [TENANT_ID_PATTERN, TENANT_ID_RULE],
  [GUID_PATTERN, 'must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)'],
  [DIGITS_PATTERN, 'must be digits only'],
  [CLIENT_SECRET_PATTERN, CLIENT_SECRET_RULE],
]);
export const CLOUDS = ['commercial', 'gcc', 'gcc-high', 'dod'] as const;
export const REGIONS = ['us', 'eu', 'uk', 'au', 'swa', 'ina'] as const;
const BAND_NAMES = ['Trustworthy', 'Low Risk', 'Moderate Risk', 'Suspicious', 'High Risk'];

const isoTime = { type: 'string', format: 'date-time' } as const;
const nullableString = { type: ['string', 'null'] } as const;
const tenantId = { type: 'string', pattern: TENANT_ID_PATTERN } as const;

const defenderRegistration = {
  type: 'object',
  additionalProperties: false,
  required: ['enabled', 'azureTenantId', 'clientId', 'clientSecret', 'pollIntervalMinutes'],
  properties: {
    enabled: { type: 'boolean' },
    azureTenantId: { type: 'string', pattern: GUID_PATTERN },
    clientId: { type: 'string', pattern: GUID_PATTERN },
    clientSecret: { type: 'string', minLength: 1, maxLength: 1024, pattern: CLIENT_SECRET_PATTERN },
    pollIntervalMinutes: { type: 'integer', minimum: 10, maximum: 1440 },
    // null as for region: Director may send every optional field, unset ones as null (commercial).
    cloud: { anyOf: [{ enum: CLOUDS }, { type: 'null' }] },
    region: { anyOf: [{ enum: REGIONS }, { type: 'null' }] },
    riskProfile: { type: ['object', 'null'] },
  },
} as const;

export const defenderRegistrationSchema = {
  $id: 'urs/defender-registration',
  ...defenderRegistration,
} as const;

export const tenantRegistrationSchema = {
  $id: 'urs/tenant-registration',
  type: 'object',
  additionalProperties: false,
  required: ['tenantId', 'defender'],
  properties: { tenantId, defender: defenderRegistration },
} as const;

export const registrationPushSchema = {
  $id: 'urs/registration-push',
  type: 'object',
  additionalProperties: false,
  required: ['schemaVersion', 'generation', 'mode', 'tenants'],
  properties: {
    schemaVersion: { const: 1 },
    generation: { type: 'integer', minimum: 0 },
    mode: { enum: ['full', 'delta'] },
    tenants: { type: 'array', maxItems: 100_000 },
  },
} as const;

const sealedSecret = {
  type: 'object',
  additionalProperties: false,
  required: ['alg', 'keyId', 'iv', 'tag', 'ciphertext'],
  properties: {
    alg: { const: 'A256GCM' },
    keyId: { type: 'string', minLength: 1 },
    iv: { type: 'string', minLength: 1 },
    tag: { type: 'string', minLength: 1 },
    ciphertext: { type: 'string', minLength: 1 },
  },
} as const;

export const tenantRecordSchema = {
  $id: 'urs/tenant-record',
  type: 'object',
  additionalProperties: false,
  required: ['schemaVersion', 'tenantId', 'revision', 'updatedAt', 'source', 'enabled', 'defender'],
  properties: {
    schemaVersion: { const: 1 },
    tenantId,
    revision: { type: 'integer', minimum: 1 },
    updatedAt: isoTime,
    source: { enum: ['director', 'rest'] },
    generation: { type: 'integer', minimum: 0 },
    enabled: { type: 'boolean' },
    disabledReason: { type: 'string' },
    defender: {
      type: 'object',
      additionalProperties: false,
      required: [
        'azureTenantId',
        'clientId',
        'clientSecret',
        'pollIntervalMinutes',
        'cloud',
        'region',
        'riskProfile',
      ],
      properties: {
        azureTenantId: { type: 'string', pattern: GUID_PATTERN },
        clientId: { type: 'string', pattern: GUID_PATTERN },
        clientSecret: sealedSecret,
        pollIntervalMinutes: { type: 'integer', minimum: 10, maximum: 1440 },
        cloud: { enum: CLOUDS },
        region: { anyOf: [{ enum: REGIONS }, { type: 'null' }] },
        riskProfile: { type: ['object', 'null'] },
      },
    },
  },
} as const;

/**
 * A device record (`toDeviceRecord`): the id, the scoring inputs and the identity VMS needs. Open to
 * further fields: during a rolling deploy an older poller still sends whole machines, which must pass.
 */
const deviceRecord = {
  type: 'object',
  required: ['id'],
  properties: {
    id: { type: 'string', minLength: 1 },
    riskScore: nullableString,
    exposureLevel: nullableString,
    defenderAvStatus: nullableString,
    onboardingStatus: nullableString,
    healthStatus: nullableString,
    lastSeen: nullableString,
    firstSeen: nullableString,
    isExcluded: { type: ['boolean', 'null'] },
    computerDnsName: nullableString,
    aadDeviceId: nullableString,
    lastIpAddress: nullableString,
    lastExternalIpAddress: nullableString,
    ipAddresses: { type: ['array', 'null'], items: { type: 'object' } },
    machineTags: { type: ['array', 'null'], items: { type: 'string' } },
    rbacGroupName: nullableString,
  },
} as const;

const cycleHeader = {
  schemaVersion: { const: 1 },
  tenantId,
  cycleId: { type: 'string', minLength: 1, maxLength: 128 },
  cycleStartedAt: isoTime,
  batchIndex: { type: 'integer', minimum: 0 },
  lastBatch: { type: 'boolean' },
  totalBatches: { type: 'integer', minimum: 1 },
  totalDevices: { type: 'integer', minimum: 0 },
} as const;
const cycleHeaderRequired = [
  'schemaVersion',
  'tenantId',
  'cycleId',
  'cycleStartedAt',
  'batchIndex',
  'lastBatch',
];
/** The last batch carries the totals; an empty fleet is one empty last batch. */
const lastBatchCarriesTotals = {
  if: { properties: { lastBatch: { const: true } } },
  then: { required: ['totalBatches', 'totalDevices'] },
} as const;

export const deviceBatchSchema = {
  $id: 'urs/device-batch',
  type: 'object',
  additionalProperties: false,
  required: [...cycleHeaderRequired, 'vulnerabilityMode', 'cvssThreshold', 'devices'],
  properties: {
    ...cycleHeader,
    vulnerabilityMode: { enum: ['per-device', 'bulk'] },
    cvssThreshold: { type: 'number', minimum: 0, maximum: 10 },
    devices: { type: 'array', maxItems: 10_000, items: deviceRecord },
  },
  ...lastBatchCarriesTotals,
} as const;

const vulnerabilitySummary = {
  type: 'object',
  additionalProperties: false,
  required: ['criticalCveCount', 'totalCveCount', 'maxCvss', 'cvssThreshold', 'topCveIds'],
  properties: {
    criticalCveCount: { type: 'integer', minimum: 0 },
    totalCveCount: { type: 'integer', minimum: 0 },
    maxCvss: { type: ['number', 'null'] },
    cvssThreshold: { type: 'number', minimum: 0, maximum: 10 },
    topCveIds: { type: 'array', maxItems: 10, items: { type: 'string' } },
  },
} as const;

export const enrichedBatchSchema = {
  $id: 'urs/enriched-batch',
  type: 'object',
  additionalProperties: false,
  required: [...cycleHeaderRequired, 'vulnerabilityMode', 'collectedAt', 'devices'],
  properties: {
    ...cycleHeader,
    vulnerabilityMode: { enum: ['per-device', 'bulk'] },
    collectedAt: isoTime,
    devices: {
      type: 'array',
      maxItems: 10_000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['machine', 'vulnerabilities'],
        properties: {
          machine: deviceRecord,
          vulnerabilities: { anyOf: [vulnerabilitySummary, { type: 'null' }] },
          fetchError: {
            type: 'object',
            required: ['code', 'message'],
            properties: { code: { type: 'string' }, message: { type: 'string' } },
          },
        },
      },
    },
    corrections: {
      type: 'array',
      maxItems: 10_000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['deviceId', 'vulnerabilities'],
        properties: {
          deviceId: { type: 'string', minLength: 1 },
          vulnerabilities: vulnerabilitySummary,
        },
      },
    },
  },
  ...lastBatchCarriesTotals,
} as const;

const scoredDeviceProperties = {
  deviceId: { type: 'string', minLength: 1 },
  computerDnsName: nullableString,
  aadDeviceId: nullableString,
  lastIpAddress: nullableString,
  lastExternalIpAddress: nullableString,
  ipAddresses: { type: 'array', items: { type: 'object' } },
  machineTags: { type: 'array', items: { type: 'string' } },
  rbacGroupName: nullableString,
  score: { type: 'integer', minimum: 0, maximum: 100 },
  band: { enum: BAND_NAMES },
  criticalScore: { type: 'number', minimum: 0, maximum: 1 },
  operationalScore: { type: 'number', minimum: 0, maximum: 1 },
  contributions: {
    type: 'array',
    items: {
      type: 'object',
      required: ['group', 'signal', 'value', 'points'],
      properties: {
        group: { enum: ['critical', 'operational'] },
        signal: { type: 'string' },
        value: { type: ['string', 'number'] },
        points: { type: 'integer', minimum: 0, maximum: 100 },
      },
    },
  },
  missing: { type: 'array', items: { type: 'string' } },
  signals: { type: 'object' },
  profileHash: { type: 'string', minLength: 1 },
  vulnerabilities: { anyOf: [vulnerabilitySummary, { type: 'null' }] },
} as const;
const scoredDeviceRequired = [
  'deviceId',
  ...VMS_IDENTITY_FIELDS,
  'score',
  'band',
  'criticalScore',
  'operationalScore',
  'contributions',
  'missing',
  'signals',
  'profileHash',
  'vulnerabilities',
];

export const scoreBatchSchema = {
  $id: 'urs/score-batch',
  type: 'object',
  additionalProperties: false,
  required: [...cycleHeaderRequired, 'collectedAt', 'scoredAt', 'devices'],
  properties: {
    ...cycleHeader,
    collectedAt: isoTime,
    scoredAt: isoTime,
    replaces: {
      type: 'object',
      additionalProperties: false,
      required: ['bands', 'incomplete'],
      properties: {
        bands: {
          type: 'object',
          additionalProperties: false,
          properties: Object.fromEntries(BAND_NAMES.map((band) => [band, { type: 'integer', minimum: 0 }])),
        },
        incomplete: { type: 'integer', minimum: 0 },
      },
    },
    devices: {
      type: 'array',
      maxItems: 10_000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: scoredDeviceRequired,
        properties: scoredDeviceProperties,
      },
    },
  },
  ...lastBatchCarriesTotals,
} as const;

export const vmsRiskScoreSchema = {
  $id: 'urs/vms-risk-score',
  type: 'object',
  additionalProperties: false,
  required: ['schemaVersion', 'tenantId', 'cycleId', 'computedAt', ...scoredDeviceRequired],
  properties: {
    schemaVersion: { const: 1 },
    tenantId,
    cycleId: { type: 'string', minLength: 1 },
    computedAt: isoTime,
    ...scoredDeviceProperties,
  },
} as const;

const count = { type: 'integer', minimum: 0 } as const;

export const vmsRiskSummarySchema = {
  $id: 'urs/vms-risk-summary',
  type: 'object',
  additionalProperties: false,
  required: [
    'schemaVersion',
    'tenantId',
    'cycleId',
    'status',
    'cycleStartedAt',
    'collectedAt',
    'publishedAt',
    'devices',
    'bands',
    'published',
    'timings',
  ],
  properties: {
    schemaVersion: { const: 1 },
    tenantId,
    cycleId: { type: 'string', minLength: 1 },
    status: { enum: ['complete', 'partial'] },
    cycleStartedAt: isoTime,
    collectedAt: { anyOf: [isoTime, { type: 'null' }] },
    publishedAt: isoTime,
    devices: {
      type: 'object',
      additionalProperties: false,
      required: ['total', 'scored', 'incomplete', 'failed'],
      properties: { total: count, scored: count, incomplete: count, failed: count },
    },
    bands: {
      type: 'object',
      additionalProperties: false,
      required: BAND_NAMES,
      properties: Object.fromEntries(BAND_NAMES.map((band) => [band, count])),
    },
    published: {
      type: 'object',
      additionalProperties: false,
      required: ['changed', 'snapshot', 'tombstones'],
      properties: { changed: count, snapshot: { type: 'boolean' }, tombstones: count },
    },
    timings: {
      type: 'object',
      additionalProperties: false,
      required: ['collectMs', 'scoreToPublishMs', 'cycleMs'],
      properties: { collectMs: count, scoreToPublishMs: count, cycleMs: count },
    },
  },
} as const;

export const deadLetterSchema = {
  $id: 'urs/dead-letter',
  type: 'object',
  additionalProperties: false,
  required: [
    'schemaVersion',
    'service',
    'sourceTopic',
    'partition',
    'offset',
    'key',
    'error',
    'payload',
    'failedAt',
  ],
  properties: {
    schemaVersion: { const: 1 },
    service: { type: 'string' },
    sourceTopic: { type: 'string' },
    partition: { type: 'integer', minimum: 0 },
    offset: { type: 'string', pattern: DIGITS_PATTERN },
    key: nullableString,
    error: {
      type: 'object',
      additionalProperties: false,
      required: ['code', 'message'],
      properties: { code: { type: 'string' }, message: { type: 'string' } },
    },
    payload: nullableString,
    failedAt: isoTime,
  },
} as const;

export const ALL_SCHEMAS = [
  defenderRegistrationSchema,
  tenantRegistrationSchema,
  registrationPushSchema,
  tenantRecordSchema,
  deviceBatchSchema,
  enrichedBatchSchema,
  scoreBatchSchema,
  vmsRiskScoreSchema,
  vmsRiskSummarySchema,
  deadLetterSchema,
];
