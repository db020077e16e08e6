import { DIGITS_PATTERN, isoTime, nullableString } from './schema-rules';

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
