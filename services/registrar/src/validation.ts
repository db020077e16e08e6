import { checkMessage, TENANT_ID_PATTERN, type RuleViolation, type TenantRegistration } from '@urs/contracts';
import { ProfileError, parseProfile } from '@urs/scoring';

/** One reason an input was refused: which field, which rule. Never the field's value. */
export interface Violation {
  field: string;
  rule: string;
}

export type ValidationResult =
  { ok: true; registration: TenantRegistration } | { ok: false; violations: Violation[] };

const tenantIdPattern = new RegExp(TENANT_ID_PATTERN);

/** Whether `value` is a well-formed tenant id (used to report on a tenant whose registration is refused). */
export function isTenantId(value: unknown): value is string {
  return typeof value === 'string' && tenantIdPattern.test(value);
}

/**
 * Validates one tenant's registration, from Director or an admin alike: the contract (tenantId pattern,
 * GUIDs, a non-empty secret without white space at its ends, control characters, invisible format characters
 * or unpaired surrogates, whole minutes 10–1440, cloud and region enums, no unknown field) and the risk
 * profile through the scoring model's own rules (a profile the scorer would refuse is refused here, at
 * the door, where someone can still fix it). Every violation is listed.
 */
export function validateRegistration(input: unknown): ValidationResult {
  const violations = onePerField(checkMessage('urs/tenant-registration', input));
  const riskProfile = (input as { defender?: { riskProfile?: unknown } } | null)?.defender?.riskProfile;
  const profileShapeOk = !violations.some((violation) => violation.field.startsWith('defender.riskProfile'));
  if (profileShapeOk && riskProfile !== undefined && riskProfile !== null) {
    try {
      parseProfile(riskProfile);
    } catch (error) {
      if (!(error instanceof ProfileError)) throw error;
      // The rule only, never `got`: the profile is the tenant's input, and a violation's text goes to the
      // dead letter (whose payload is redacted), the tenant's status and the log.
      for (const violation of error.violations) {
        violations.push({
          field: violation.path.replace(/^profile/, 'defender.riskProfile'),
          rule: violation.rule,
        });
      }
    }
  }
  if (violations.length > 0) return { ok: false, violations };
  return { ok: true, registration: input as TenantRegistration };
}

/**
 * One violation per field. The alternatives of one `anyOf` (`region`: one of the regions, or null) are
 * joined with "or": meeting one is enough. Rules a field breaks together (`pollIntervalMinutes: 9.5`: an
 * integer, and from 10 to 1440) are joined with "and": each must be met.
 */
function onePerField(violations: RuleViolation[]): Violation[] {
  // field → group (an anyOf, or a rule of its own) → alternative → its rules
  const byField = new Map<string, Map<string, Map<string, string[]>>>();
  for (const { field, rule, alternative } of violations) {
    const group = alternative === undefined ? `rule:${rule}` : `anyOf:${alternative.replace(/\/\d+$/, '')}`;
    const groups = byField.get(field) ?? new Map<string, Map<string, string[]>>();
    const alternatives = groups.get(group) ?? new Map<string, string[]>();
    const rules = alternatives.get(alternative ?? '') ?? [];
    if (!rules.includes(rule)) rules.push(rule);
    alternatives.set(alternative ?? '', rules);
    groups.set(group, alternatives);
    byField.set(field, groups);
  }
  const and = (rules: string[]): string => rules.join(' and ');
  return [...byField].map(([field, groups]) => ({
    field,
    rule: and([...groups.values()].map((alternatives) => [...alternatives.values()].map(and).join(' or '))),
  }));
}

/** Renames fields for an answer whose input had another shape (`defender.clientId` → `clientId` in REST). */
export function renameFields(violations: Violation[], rename: (field: string) => string): Violation[] {
  return violations.map((violation) => ({ field: rename(violation.field), rule: violation.rule }));
}

/**
 * Violations named as a REST body names its fields (`clientId`, not the stored `defender.clientId`): how
 * every REST answer names them, a PUT's 400 and a refused registration's 404 alike.
 */
export function restViolations(violations: Violation[]): Violation[] {
  return renameFields(violations, (field) => field.replace(/^defender\./, ''));
}

/**
 * The violations a status, a dead letter or a log line lists at most; the others are counted, as `ContractError`
 * counts them. A Director entry with tens of thousands of unknown keys would otherwise make a dead letter larger
 * than `urs.dlq` takes, and a status and a log line of megabytes.
 */
export const MAX_VIOLATIONS_LISTED = 50;

/** The violations a status keeps (`MAX_VIOLATIONS_LISTED`, the first ones). */
export function listedViolations(violations: Violation[]): Violation[] {
  return violations.slice(0, MAX_VIOLATIONS_LISTED);
}

/**
 * One line listing the violations, for a status, a dead letter or a log line: the first `MAX_VIOLATIONS_LISTED`,
 * then how many more of `total` (default: as many as given) there are (`(+49950 more)`).
 */
export function describeViolations(violations: Violation[], total = violations.length): string {
  const listed = listedViolations(violations);
  const more = total - listed.length;
  const line = listed.map((violation) => `${violation.field} ${violation.rule}`).join('; ');
  return more > 0 ? `${line} (+${more} more)` : line;
}

/** A refused registration's message, as its status stores it: its violations in one line (`describeViolations`). */
export function refusalMessage(violations: Violation[], total = violations.length): string {
  return `registration refused: ${describeViolations(violations, total)}`;
}

/** How many violations a stored refusal's message counts beyond those it lists (`describeViolations`). */
const MORE_VIOLATIONS = /\(\+(\d+) more\)$/;

/**
 * A stored refusal as a REST answer shows it: its violations named as `restViolations` names them, and the
 * message of a refusal of violations (made of them, `refusalMessage`) made again of the renamed ones. Stored
 * with the names of the registration as Director sends it (`defender.clientId`), a tenant admin would
 * otherwise read other names than a PUT's 400 gives. A failure's message (no violations) stays as it is.
 */
export function restRefusal<T extends { message: string; violations: Violation[] }>(refusal: T): T {
  if (refusal.violations.length === 0) return refusal;
  const violations = restViolations(refusal.violations);
  // A status keeps the first violations only: the message made again counts the others as the stored one did.
  const more = Number(MORE_VIOLATIONS.exec(refusal.message)?.[1] ?? 0);
  return { ...refusal, message: refusalMessage(violations, violations.length + more), violations };
}
