import { VMS_IDENTITY_FIELDS } from './device-record';
import { MISSING_REASONS } from './missing-reasons';
import { BAND_SCORES, BANDS, SIGNALS } from './model-terms';
import { isoTime, nullableString, tenantId } from './schema-rules';

/** The schemas of a cycle's batches: devices collected, enriched with their vulnerabilities, scored. */

/** The longest cycle id a batch's header may carry. */
export const MAX_CYCLE_ID_LENGTH = 128;

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

/** The hash of the risk profile the cycle started with (optional: an older poller sends none). */
const profileHash = { type: 'string', minLength: 1 } as const;

const cycleHeader = {
  schemaVersion: { const: 1 },
  tenantId,
  cycleId: { type: 'string', minLength: 1, maxLength: MAX_CYCLE_ID_LENGTH },
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
    profileHash,
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

/** Why a device's vulnerabilities are null. */
const fetchError = {
  type: 'object',
  required: ['code', 'message'],
  properties: { code: { type: 'string' }, message: { type: 'string' } },
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
    profileHash,
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
          fetchError,
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
          vulnerabilities: { anyOf: [vulnerabilitySummary, { type: 'null' }] },
          fetchError,
        },
      },
    },
  },
  ...lastBatchCarriesTotals,
} as const;

export const scoredDeviceProperties = {
  deviceId: { type: 'string', minLength: 1 },
  computerDnsName: nullableString,
  aadDeviceId: nullableString,
  lastIpAddress: nullableString,
  lastExternalIpAddress: nullableString,
  ipAddresses: { type: 'array', items: { type: 'object' } },
  machineTags: { type: 'array', items: { type: 'string' } },
  rbacGroupName: nullableString,
  score: { type: 'integer', minimum: 0, maximum: 100 },
  // The band of `score`: see scoredDeviceRules.
  band: { enum: BANDS },
  criticalScore: { type: 'number', minimum: 0, maximum: 1 },
  operationalScore: { type: 'number', minimum: 0, maximum: 1 },
  contributions: {
    type: 'array',
    items: {
      type: 'object',
      additionalProperties: false,
      required: ['group', 'signal', 'value', 'points', 'assumed'],
      properties: {
        group: { enum: ['critical', 'operational'] },
        signal: { enum: SIGNALS },
        value: { type: ['string', 'number'] },
        points: { type: 'integer', minimum: 0, maximum: 100 },
        // Points charged for a missing signal under `assume-worst` (true), or observed (false).
        assumed: { type: 'boolean' },
      },
    },
  },
  missing: { type: 'array', items: { enum: SIGNALS } },
  signals: { type: 'object' },
  profileHash,
  vulnerabilities: { anyOf: [vulnerabilitySummary, { type: 'null' }] },
  // Optional: absent when nothing is missing, and from the records of an older scorer.
  missingReasons: {
    type: 'object',
    propertyNames: { enum: SIGNALS },
    additionalProperties: { enum: MISSING_REASONS },
  },
} as const;
/** The rules over a scored device as a whole: its `band` is the one its `score` falls in. */
export const scoredDeviceRules = {
  allOf: BAND_SCORES.map(({ band, min, max }) => ({
    if: { required: ['score'], properties: { score: { type: 'integer', minimum: min, maximum: max } } },
    then: { properties: { band: { const: band } } },
  })),
};
export const scoredDeviceRequired = [
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
          properties: Object.fromEntries(BANDS.map((band) => [band, { type: 'integer', minimum: 0 }])),
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
        ...scoredDeviceRules,
      },
    },
  },
  ...lastBatchCarriesTotals,
} as const;
