/**
 * Keys whose values are never written anywhere: client secrets, API tokens, passwords, authorization
 * headers, and the encrypted secret envelope (no reason to spread ciphertext through logs either).
 */
const SECRET_KEY =
  /secret|password|passwd|authorization|^token$|accesstoken|access_token|apitoken|bearer|ciphertext/i;

export const REDACTED = '[redacted]';

/** `"clientSecret": "…"` (any quoted key naming a secret or a password, and its quoted value) inside text. */
const SECRET_IN_TEXT = /("[^"]*(?:secret|password)[^"]*"\s*:\s*)"(?:[^"\\]|\\.)*"/gi;

/**
 * `text` with the value of every quoted secret field in it replaced: an error's message may quote the JSON it
 * failed on (a parse error, a handler's own message), and a log line or a dead letter must not carry it on.
 */
export function redactText(text: string): string {
  return text.replace(SECRET_IN_TEXT, `$1"${REDACTED}"`);
}

/**
 * A copy of `value` with every secret-looking key's value replaced, and every quoted secret field inside a
 * string (`redactText`), errors flattened to `{ name, code, message }` (stack traces and causes can carry
 * request bodies), cycles cut.
 */
export function redact(value: unknown, seen: WeakSet<object> = new WeakSet()): unknown {
  if (typeof value === 'string') return redactText(value);
  if (value === null || typeof value !== 'object') return value;
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return { name: value.name, ...(code === undefined ? {} : { code }), message: redactText(value.message) };
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
