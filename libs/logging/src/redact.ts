/**
 * Keys whose values are never written anywhere: client secrets, API tokens, passwords, authorization
 * headers, and the encrypted secret envelope (no reason to spread ciphertext through logs either).
 */
const SECRET_KEY =
  /secret|password|passwd|authorization|^token$|accesstoken|access_token|apitoken|bearer|ciphertext/i;

export const REDACTED = '[redacted]';

/**
 * A copy of `value` with every secret-looking key's value replaced, errors flattened to
 * `{ name, code, message }` (stack traces and causes can carry request bodies), cycles cut.
 */
export function redact(value: unknown, seen: WeakSet<object> = new WeakSet()): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return { name: value.name, ...(code === undefined ? {} : { code }), message: value.message };
  }
  if (value instanceof Date) return value.toISOString();
  if (seen.has(value)) return '[circular]';
  seen.add(value);
  if (Array.isArray(value)) return value.map((item) => redact(item, seen));
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    out[key] = SECRET_KEY.test(key) ? REDACTED : redact(item, seen);
  }
  return out;
}
