import { checkMessage, TENANT_ID_PATTERN, type TenantRegistration } from '@urs/contracts';
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
 * GUIDs, a non-empty secret without white space at its ends, control characters or unpaired surrogates,
 * whole minutes 10–1440, cloud and region enums, no unknown field) and the risk
 * profile through the scoring model's own rules (a profile the scorer would refuse is refused here, at
 * the door, where someone can still fix it). Every violation is listed.
 */
export function validateRegistration(input: unknown): ValidationResult {
  const violations = mergeAlternatives(checkMessage('urs/tenant-registration', input));
  const riskProfile = (input as { defender?: { riskProfile?: unknown } } | null)?.defender?.riskProfile;
  const profileShapeOk = !violations.some((violation) => violation.field.startsWith('defender.riskProfile'));
  if (profileShapeOk && riskProfile !== undefined && riskProfile !== null) {
    try {
      parseProfile(riskProfile);
    } catch (error) {
      if (!(error instanceof ProfileError)) throw error;
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
 * One violation per field: a field that may take one of several shapes (`region`: a region or null)
 * fails each alternative; their rules are joined with "or", the schema's summary line dropped.
 */
function mergeAlternatives(violations: Violation[]): Violation[] {
  const byField = new Map<string, string[]>();
  for (const { field, rule } of violations) {
    if (rule === 'must match a schema in anyOf') continue;
    const rules = byField.get(field) ?? [];
    if (!rules.includes(rule)) rules.push(rule);
    byField.set(field, rules);
  }
  return [...byField].map(([field, rules]) => ({ field, rule: rules.join(' or ') }));
}

/** Renames fields for an answer whose input had another shape (`defender.clientId` → `clientId` in REST). */
export function renameFields(violations: Violation[], rename: (field: string) => string): Violation[] {
  return violations.map((violation) => ({ field: rename(violation.field), rule: violation.rule }));
}

/** One line listing every violation, for a status or a dead letter. */
export function describeViolations(violations: Violation[]): string {
  return violations.map((violation) => `${violation.field} ${violation.rule}`).join('; ');
}
