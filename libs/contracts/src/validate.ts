import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { UrsError } from '@urs/resilience';
import { PATTERN_RULES } from './schema-rules';
import { ALL_SCHEMAS } from './schemas';
import type {
  DeadLetter,
  DeviceBatch,
  EnrichedBatch,
  RegistrationPush,
  ScoreBatch,
  TenantRecord,
  TenantRegistration,
  VmsRiskScore,
  VmsRiskSummary,
} from './types';

/** The message kinds, by schema id, with their TypeScript shapes. */
export interface ContractTypes {
  'urs/tenant-registration': TenantRegistration;
  'urs/registration-push': RegistrationPush;
  'urs/tenant-record': TenantRecord;
  'urs/device-batch': DeviceBatch;
  'urs/enriched-batch': EnrichedBatch;
  'urs/score-batch': ScoreBatch;
  'urs/vms-risk-score': VmsRiskScore;
  'urs/vms-risk-summary': VmsRiskSummary;
  'urs/dead-letter': DeadLetter;
}
export type ContractId = keyof ContractTypes;

/** A message that does not match its contract. Never retryable: the same bytes fail the same way. */
export class ContractError extends UrsError {
  constructor(
    readonly contract: string,
    readonly violations: RuleViolation[],
  ) {
    const first = violations[0];
    super(
      'CONTRACT_INVALID',
      `${contract}: ${first ? `${first.field} ${first.rule}` : 'invalid'}${violations.length > 1 ? ` (+${violations.length - 1} more)` : ''}`,
      { details: { contract, violations } },
    );
  }
}

function createAjv(allErrors: boolean): Ajv {
  // `verbose` gives each error its schema's other bounds: a value under `minimum` is told the whole range.
  const instance = new Ajv({ allErrors, strict: false, verbose: true });
  addFormats(instance, ['date-time']);
  for (const schema of ALL_SCHEMAS) instance.addSchema(schema);
  return instance;
}
/** Fast path: stops at the first violation (messages on the bus). */
const ajv = createAjv(false);
/** Lists every violation (answers to people); compiled lazily. */
let ajvAll: Ajv | undefined;

const compiled = new Map<string, ValidateFunction>();
function validator(id: ContractId): ValidateFunction {
  let validate = compiled.get(id);
  if (!validate) {
    validate = ajv.getSchema(id);
    if (!validate) throw new Error(`no schema ${id}`);
    compiled.set(id, validate);
  }
  return validate;
}

/**
 * Compiles the validators of these contracts now (ajv compiles one on first use: 10–17 ms for a batch
 * contract, which the first message of a cycle would otherwise wait for). Consumers call it at start.
 */
export function compileContracts(ids: readonly ContractId[]): void {
  for (const id of ids) validator(id);
}

/** `/defender/pollIntervalMinutes` → `defender.pollIntervalMinutes`; the root is named `(message)`. */
export function fieldOf(error: ErrorObject): string {
  const path = error.instancePath.replace(/^\//, '').replace(/\//g, '.');
  const missing =
    error.keyword === 'required' ? (error.params as { missingProperty?: string }).missingProperty : undefined;
  const extra =
    error.keyword === 'additionalProperties'
      ? (error.params as { additionalProperty?: string }).additionalProperty
      : undefined;
  const leaf = missing ?? extra ?? error.propertyName;
  if (leaf) return path ? `${path}.${leaf}` : leaf;
  return path || '(message)';
}

/** JSON types in words, for a field of the wrong kind. */
const TYPE_WORDS: Readonly<Record<string, string>> = {
  string: 'a string',
  integer: 'an integer',
  number: 'a number',
  boolean: 'true or false',
  object: 'an object',
  array: 'an array',
  null: 'null',
};

/**
 * The rule a value broke, in words an administrator can act on: never a regular expression (`PATTERN_RULES`)
 * or a schema term ("must be equal to constant", "must be object,null"), and never the value itself (it may
 * be a secret).
 */
export function ruleOf(error: ErrorObject): string {
  const params = error.params as Record<string, unknown>;
  // A rule over an object's keys (`propertyNames`), broken by the key `fieldOf` names.
  if (error.propertyName !== undefined) return 'is not a known field';
  switch (error.keyword) {
    case 'required':
      return 'is required';
    case 'additionalProperties':
      return 'is not a known field';
    case 'enum':
      return `must be one of ${((params.allowedValues as unknown[] | undefined) ?? []).map(String).join(', ')}`;
    case 'const':
      return `must be ${JSON.stringify(params.allowedValue)}`;
    case 'type': {
      const types = [params.type].flat().join(',').split(',');
      return `must be ${types.map((type) => TYPE_WORDS[type] ?? type).join(' or ')}`;
    }
    case 'pattern':
      return PATTERN_RULES.get(String(params.pattern)) ?? 'is not in the expected form';
    case 'minLength':
      return params.limit === 1
        ? 'must not be empty'
        : `must be at least ${String(params.limit)} characters long`;
    case 'maxLength':
      return `must be at most ${String(params.limit)} characters long`;
    case 'minItems':
      return `must have at least ${String(params.limit)} entries`;
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return boundOf(error);
    case 'maxItems':
      return `must have at most ${String(params.limit)} entries`;
    case 'format':
      return params.format === 'date-time'
        ? 'must be a date and time (RFC 3339, e.g. 2026-01-31T12:00:00Z)'
        : `must be a ${String(params.format)}`;
    default:
      return error.message ?? 'is invalid';
  }
}

/**
 * The bounds of a number in words: the whole range when the schema gives both ends (`must be a whole number
 * from 10 to 1440`, whichever end was passed), else the one end that was.
 */
function boundOf(error: ErrorObject): string {
  const limit = String((error.params as { limit?: unknown }).limit);
  const schema = (error.parentSchema ?? {}) as { type?: unknown; minimum?: unknown; maximum?: unknown };
  const inclusive = error.keyword === 'minimum' || error.keyword === 'maximum';
  if (inclusive && typeof schema.minimum === 'number' && typeof schema.maximum === 'number') {
    const kind = schema.type === 'integer' ? 'a whole number' : 'a number';
    return `must be ${kind} from ${schema.minimum} to ${schema.maximum}`;
  }
  switch (error.keyword) {
    case 'minimum':
      return `must be at least ${limit}`;
    case 'maximum':
      return `must be at most ${limit}`;
    case 'exclusiveMinimum':
      return `must be more than ${limit}`;
    default:
      return `must be less than ${limit}`;
  }
}

/**
 * One broken rule: the field, the rule in words, and for a rule that is one alternative of an `anyOf`
 * (`region`: one of the regions, or null) which alternative it is (its schema path, `…/region/anyOf/0`):
 * meeting any one alternative of an `anyOf` is enough, while every other rule must be met.
 */
export interface RuleViolation {
  field: string;
  rule: string;
  alternative?: string;
}

const ALTERNATIVE = /^(.*?\/anyOf\/\d+)(?:\/|$)/;

/**
 * One violation per failed rule. An `if`/`then` failure is left out: it only says that the `then` part failed,
 * whose own violations (a required field) are listed; so is an `anyOf` failure ("must match a schema in
 * anyOf"), whose alternatives are listed, each marked as one, and a `propertyNames` failure, whose key's own
 * violation is listed.
 */
function violationsOf(errors: readonly ErrorObject[]): RuleViolation[] {
  return errors
    .filter(
      (error) => error.keyword !== 'if' && error.keyword !== 'anyOf' && error.keyword !== 'propertyNames',
    )
    .map((error) => {
      const alternative = ALTERNATIVE.exec(error.schemaPath)?.[1];
      return {
        field: fieldOf(error),
        rule: ruleOf(error),
        ...(alternative === undefined ? {} : { alternative }),
      };
    });
}

/** Throws ContractError naming the first failing field and its rule. Value is returned typed. */
export function validateMessage<K extends ContractId>(id: K, value: unknown): ContractTypes[K] {
  const validate = validator(id);
  if (!validate(value)) {
    throw new ContractError(id, violationsOf(validate.errors ?? []));
  }
  return value as ContractTypes[K];
}

/** Like validateMessage, but answers every violation (for REST answers that list all problems). */
export function checkMessage(id: ContractId, value: unknown): RuleViolation[] {
  ajvAll ??= createAjv(true);
  const validate = ajvAll.getSchema(id);
  if (!validate) throw new Error(`no schema ${id}`);
  if (validate(value)) return [];
  return violationsOf(validate.errors ?? []);
}
