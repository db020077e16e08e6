import { UrsError } from '@urs/resilience';
import type { UrsErrorOptions } from '@urs/resilience';

/**
 * One reason a profile was rejected: where (`profile.weights.criticalRisk`), which rule it broke, and what
 * was there. `rule` never quotes the value, so it may go where a value must not (a registration's dead
 * letter, a tenant's status: a profile is the tenant's input and may hold anything); `got` describes the
 * value (strings quoted, cut at 60 characters) for someone checking their own profile.
 */
export interface ProfileViolation {
  path: string;
  rule: string;
  got?: string;
}

/**
 * The base error of the scoring library. Everything it throws is caused by its input (a profile, a
 * machine record, a vulnerability list), so nothing here is ever retryable: the same input fails the
 * same way, and belongs on the dead-letter topic with this message.
 */
export class ScoringError extends UrsError {
  constructor(code: string, message: string, options: Omit<UrsErrorOptions, 'canRetry'> = {}) {
    super(code, message, { ...options, canRetry: false });
  }
}

/**
 * A tenant's risk profile broke the schema or the model's rules. Code `PROFILE_INVALID`. The message names
 * each value (`(got 101)`), for the operator checking a profile file; `violations[].rule` does not.
 */
export class ProfileError extends ScoringError {
  readonly violations: readonly ProfileViolation[];

  constructor(violations: readonly ProfileViolation[]) {
    super(
      'PROFILE_INVALID',
      `invalid risk profile: ${violations.map((v) => `${v.path}: ${v.rule}${v.got === undefined ? '' : ` (got ${v.got})`}`).join('; ')}`,
      {
        details: { violations },
      },
    );
    this.violations = violations;
  }
}
