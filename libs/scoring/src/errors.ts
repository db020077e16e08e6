import { UrsError } from '@urs/resilience';
import type { UrsErrorOptions } from '@urs/resilience';

/** One reason a profile was rejected: where (`profile.weights.criticalRisk`) and which rule it broke. */
export interface ProfileViolation {
  path: string;
  rule: string;
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

/** A tenant's risk profile broke the schema or the model's rules. Code `PROFILE_INVALID`. */
export class ProfileError extends ScoringError {
  readonly violations: readonly ProfileViolation[];

  constructor(violations: readonly ProfileViolation[]) {
    super(
      'PROFILE_INVALID',
      `invalid risk profile: ${violations.map((v) => `${v.path}: ${v.rule}`).join('; ')}`,
      {
        details: { violations },
      },
    );
    this.violations = violations;
  }
}
