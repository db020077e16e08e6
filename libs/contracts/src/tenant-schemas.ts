import { CLIENT_SECRET_PATTERN, CLOUDS, GUID_PATTERN, REGIONS, isoTime, tenantId } from './schema-rules';

/** The schemas of a tenant's registration, as Director and the REST API send it and as it is stored. */

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
    // A JSON number holds whole numbers exactly only up to 2^53 - 1: one beyond reads as another number
    // (9007199254740993 as 9007199254740992), and the pushes would be ordered by numbers Director did not send.
    generation: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
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
    // Not bounded as in a push: a record is the registrar's own, and one written before the push's bound
    // must stay readable (a rebuild would otherwise leave its tenant out).
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
