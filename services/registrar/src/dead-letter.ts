import { withheldPayload, type PayloadRedactor } from '@urs/bus';
import { registrationPushSchema, tenantRegistrationSchema } from '@urs/contracts';
import { REDACTED } from '@urs/logging';
import { PROFILE_SCHEMA } from '@urs/scoring';

/** The parts of a JSON Schema that say which values a field takes. */
interface FieldSchema {
  type?: string | readonly string[];
  properties?: Readonly<Record<string, FieldSchema>>;
  items?: FieldSchema;
  anyOf?: readonly FieldSchema[];
  enum?: readonly unknown[];
  const?: unknown;
  pattern?: string;
}

/**
 * A tenant entry of a push: the registration contract, with the risk profile's own fields. The secret's
 * pattern only rules out what no Entra ID secret is (white space at its ends, control characters): it does
 * not pin a value down, so the secret stays a free string here and is always redacted.
 */
const TENANT_ENTRY: FieldSchema = {
  ...tenantRegistrationSchema,
  properties: {
    ...tenantRegistrationSchema.properties,
    defender: {
      ...tenantRegistrationSchema.properties.defender,
      properties: {
        ...tenantRegistrationSchema.properties.defender.properties,
        clientSecret: { type: 'string' },
        riskProfile: PROFILE_SCHEMA as FieldSchema,
      },
    },
  },
};

/** A push: its contract, with the fields of its tenant entries. */
const PUSH: FieldSchema = {
  ...registrationPushSchema,
  properties: { ...registrationPushSchema.properties, tenants: { type: 'array', items: TENANT_ENTRY } },
};

/**
 * The payload of a dead letter of `urs.registration` (the runner's `redactPayload` for the topic): Director's
 * pushes carry client secrets in clear, and a secret may sit under any name (`clientSecert`, `credential`,
 * `pwd`, `credentials.value`) that no redaction by key name recognises. So a value is kept only where the
 * push's contract pins it down (see `keepPinned`); every other string and number becomes "[redacted]", at
 * any depth and whatever the push's shape. Keys, the nesting, booleans and nulls stay: an operator still sees
 * the structure, the tenant ids and what was wrong. Text that is not JSON, or is a JSON string (a push sent as
 * a string), is withheld whole.
 */
export const redactPushPayload: PayloadRedactor = (text) => redactAs(text, PUSH);

/** The payload of the dead letter of one refused tenant entry of a push, kept as `redactPushPayload` keeps it. */
export const redactTenantPayload: PayloadRedactor = (text) => redactAs(text, TENANT_ENTRY);

function redactAs(text: string, schema: FieldSchema): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return withheldPayload(text);
  }
  if (typeof parsed === 'string') return withheldPayload(text);
  return JSON.stringify(keepPinned(parsed, schema));
}

/**
 * `value` with every string and number its schema does not pin down replaced: a field the contract does not
 * know, a free string (the secret's own field), or a value of the wrong kind for its field.
 */
function keepPinned(value: unknown, schema: FieldSchema | undefined): unknown {
  if (schema !== undefined && pinned(value, schema)) return value;
  if (Array.isArray(value)) return value.map((item) => keepPinned(item, schema?.items));
  if (value !== null && typeof value === 'object') {
    const fields = schema?.properties ?? {};
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [
        key,
        keepPinned(item, Object.hasOwn(fields, key) ? fields[key] : undefined),
      ]),
    );
  }
  return typeof value === 'string' || typeof value === 'number' ? REDACTED : value;
}

/**
 * Whether `value` is a string or number that cannot be a secret, because its field allows only a few:
 * a number where the field takes a number, a string of the field's enum (in any case: `"FULL"` for `"full"`
 * is the likely mistake) or matching its pattern (a GUID, a tenant id).
 */
function pinned(value: unknown, schema: FieldSchema): boolean {
  if (schema.anyOf) return schema.anyOf.some((alternative) => pinned(value, alternative));
  const allowed = schema.enum ?? (schema.const === undefined ? undefined : [schema.const]);
  if (typeof value === 'number') {
    const types = [schema.type ?? []].flat();
    return (
      types.includes('number') ||
      types.includes('integer') ||
      (allowed?.some((choice) => typeof choice === 'number') ?? false)
    );
  }
  if (typeof value !== 'string') return false;
  if (allowed) {
    return allowed.some(
      (choice) => typeof choice === 'string' && choice.toLowerCase() === value.toLowerCase(),
    );
  }
  return schema.pattern !== undefined && patternOf(schema.pattern).test(value);
}

const patterns = new Map<string, RegExp>();
function patternOf(source: string): RegExp {
  let pattern = patterns.get(source);
  if (!pattern) patterns.set(source, (pattern = new RegExp(source)));
  return pattern;
}
