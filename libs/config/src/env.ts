import { UrsError } from '@urs/resilience';

/** The process environment, injected so configuration is testable and read once. */
export type Env = Readonly<Record<string, string | undefined>>;

/** A missing or malformed variable. Fails the process at start, naming the variable and the rule. */
export class ConfigError extends UrsError {
  constructor(variable: string, rule: string) {
    super('CONFIG_INVALID', `${variable} ${rule}`, { details: { variable } });
  }
}

function raw(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

export function readString(env: Env, name: string, fallback?: string): string {
  const value = raw(env, name) ?? fallback;
  if (value === undefined) throw new ConfigError(name, 'is required');
  return value;
}

export function readOptionalString(env: Env, name: string): string | undefined {
  return raw(env, name);
}

export interface IntRule {
  fallback?: number;
  min?: number;
  max?: number;
}

/**
 * The longest delay Node's timers run (2^31 - 1 ms, ~24.8 days): a longer one fires at once (a timer loop
 * turns busy) and AbortSignal.timeout throws. Every millisecond setting (`*_MS`) is capped at it.
 */
export const MAX_TIMER_MS = 2_147_483_647;

export function readInt(env: Env, name: string, rule: IntRule = {}): number {
  const text = raw(env, name);
  if (text === undefined) {
    if (rule.fallback === undefined) throw new ConfigError(name, 'is required');
    return rule.fallback;
  }
  if (!/^-?\d+$/.test(text)) throw new ConfigError(name, `must be a whole number (got "${text}")`);
  const value = Number(text);
  if (rule.min !== undefined && value < rule.min)
    throw new ConfigError(name, `must be ≥ ${rule.min} (got ${value})`);
  if (rule.max !== undefined && value > rule.max)
    throw new ConfigError(name, `must be ≤ ${rule.max} (got ${value})`);
  if (name.endsWith('_MS') && value > MAX_TIMER_MS)
    throw new ConfigError(
      name,
      `must be ≤ ${MAX_TIMER_MS} (the longest timer Node runs, ~24.8 days; a longer one fires at once) (got ${value})`,
    );
  return value;
}

export function readBool(env: Env, name: string, fallback: boolean): boolean {
  const text = raw(env, name)?.toLowerCase();
  if (text === undefined) return fallback;
  if (['1', 'true', 'yes', 'on'].includes(text)) return true;
  if (['0', 'false', 'no', 'off'].includes(text)) return false;
  throw new ConfigError(name, `must be true or false (got "${text}")`);
}

/** A comma-separated list; empty items are dropped. */
export function readList(env: Env, name: string, fallback: readonly string[] = []): string[] {
  const text = raw(env, name);
  if (text === undefined) return [...fallback];
  return text
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
}

export function readEnum<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const text = raw(env, name);
  if (text === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(text)) {
    throw new ConfigError(name, `must be one of ${allowed.join(', ')} (got "${text}")`);
  }
  return text as T;
}

export function readUrl(env: Env, name: string, fallback?: string): string {
  const value = readString(env, name, fallback);
  try {
    new URL(value);
  } catch {
    // Not quoted: a URL may carry a password (`redis://:secret@host`), and this text goes to the log.
    throw new ConfigError(
      name,
      `must be a URL such as scheme://host:port (got ${value.length} characters that are not one)`,
    );
  }
  return value;
}
