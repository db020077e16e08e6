import { scoredDeviceProperties, scoredDeviceRequired, scoredDeviceRules } from './batch-schemas';
import { BANDS } from './model-terms';
import { isoTime, tenantId } from './schema-rules';

/** The schemas of what is published to VMS: a device's risk score and a cycle's summary. */

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
  ...scoredDeviceRules,
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
      required: BANDS,
      properties: Object.fromEntries(BANDS.map((band) => [band, count])),
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
