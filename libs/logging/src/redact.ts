/**
 * A key (lower case, without `-`, `_`, `.` and spaces, so `client_secret`, `Client-Secret` and `clientSecret`
 * alike) whose value is a secret: client secrets and assertions, passwords, API keys, authorization headers
 * and cookies, tokens (`x-ms-token-aad-access-token`, `refresh_token`, `apiTokens`), and the encrypted secret
 * envelope (no reason to spread ciphertext through logs either).
 */
const SECRET_NAME =
  /secret|password|passwd|authorization|bearer|ciphertext|cookie|assertion|tokens?$|apikeys?$/;
/**
 * ...unless the key names a fact about the secret rather than the secret itself: which one (`secretName`,
 * `clientSecretKeyId`), whether one is set (`clientSecretSet`), its kind (`client_assertion_type`), when it
 * expires or its version. Such values are what an operator needs to find the secret, and never open it.
 */
const ABOUT_A_SECRET = /(?:name|id|set|type|expires|expiresat|expireson|version)$/;

export const REDACTED = '[redacted]';

/** Whether the value of the field named `key` is a secret (see SECRET_NAME and ABOUT_A_SECRET). */
function namesSecret(key: string): boolean {
  const name = key.toLowerCase().replace(/[\s_.-]/g, '');
  return SECRET_NAME.test(name) && !ABOUT_A_SECRET.test(name);
}

/**
 * A quoted key, its colon and the opening quote of a string value, at any depth of escaping: `"key": "`,
 * `\"key\": \"` (JSON quoted inside a JSON string), `\\\"key\\\": \\\"`. Group 1 is the backslashes before
 * each quote. It starts only where a run of backslashes does, and the key holds no quote or backslash, so
 * no stretch of the text is tried more than twice.
 */
const QUOTED_KEY = /(?<!\\)(\\*)"([^"\\]*)\1"\s*:\s*\1"/g;

/**
 * `key=value` of a form-encoded body or a query string (`client_secret=…&grant_type=…`). The key starts
 * where a run of key characters does, and the value stops at `&`, a space, a quote or a backslash.
 */
const FORM_FIELD = /(?<![\w.%-])([\w.%-]+=)([^&\s"'\\]+)/g;

/**
 * An authorization header written out (`Authorization: Basic …`, `proxy-authorization=…`): its credentials,
 * after the scheme. Eight characters at least, so that `(Authorization: Bearer <token>)` is kept.
 */
const AUTHORIZATION = /(?<![\w-])((?:proxy-)?authorization\s*[:=]\s*(?:[a-z][\w-]*\s+)?)[^\s"'\\<>,;]{8,}/gi;

/** `Bearer <credentials>` anywhere; sixteen characters at least (the shortest API token), so prose is kept. */
const BEARER = /(?<![\w-])(bearer\s+)[^\s"'\\<>,;]{16,}/gi;

/** A JWT (a token, an assertion): `eyJ` (base64url of `{"`), then at least two more dot-separated parts. */
const JWT = /(?<![\w-])eyJ[\w-]*(?:\.[\w-]*){2,}/g;

/**
 * `text` with every secret in it replaced: an error's message may quote the JSON it failed on (a parse error,
 * a handler's own message, a dead letter quoting a message that quotes JSON in turn), the form-encoded token
 * request it sent (`client_secret=…`, `client_assertion=…`, `password=…`), or a request dump with its
 * `Authorization: Bearer …` header, and a log line, a dead letter or an answer must not carry it on. Replaced:
 * - the string value of every quoted field whose key names a secret (`namesSecret`), at any depth of
 *   escaping; one whose closing quote is missing (text cut short), up to the end of the text;
 * - the value of every form or query field whose key names a secret;
 * - the credentials of an authorization header, of `Bearer …`, and every JWT.
 * A key that names a fact about a secret (`secretName`, `clientSecretKeyId`) keeps its value, and so does
 * prose about secrets. Each pattern starts only where a run of the characters it takes starts, and stops at
 * the first one it cannot take: the time taken grows with the text's length, whatever the text.
 */
export function redactText(text: string): string {
  return redactQuotedFields(text)
    .replace(FORM_FIELD, (field, key: string) => (namesSecret(key.slice(0, -1)) ? key + REDACTED : field))
    .replace(AUTHORIZATION, `$1${REDACTED}`)
    .replace(BEARER, `$1${REDACTED}`)
    .replace(JWT, REDACTED);
}

function redactQuotedFields(text: string): string {
  const pattern = new RegExp(QUOTED_KEY);
  let out = '';
  let copied = 0;
  for (let match = pattern.exec(text); match !== null; match = pattern.exec(text)) {
    const escapes = (match[1] as string).length;
    // 0, 1, 3, 7… backslashes: a quote at some depth of escaping; any other count is no quote of a key.
    if ((escapes & (escapes + 1)) !== 0 || !namesSecret(match[2] as string)) continue;
    const end = closingQuote(text, pattern.lastIndex, escapes);
    out += text.slice(copied, pattern.lastIndex) + REDACTED;
    copied = end;
    pattern.lastIndex = end;
  }
  return out + text.slice(copied);
}

/**
 * Where the string value starting at `from`, its quotes escaped by `escapes` backslashes, ends: the index of
 * its closing quote's first backslash, or the text's end. A quote inside the value has more backslashes before
 * it: at depth d (`escapes` = 2^d - 1) a backslash of the value is 2^(d+1) of them, so the closing quote is the
 * one after a run of backslashes whose length leaves `escapes` when divided by 2^(d+1).
 */
function closingQuote(text: string, from: number, escapes: number): number {
  const period = 2 * (escapes + 1);
  let backslashes = 0;
  for (let index = from; index < text.length; index += 1) {
    const char = text.charCodeAt(index);
    if (char === BACKSLASH) {
      backslashes += 1;
      continue;
    }
    if (char === QUOTE && backslashes % period === escapes) return index - escapes;
    backslashes = 0;
  }
  return text.length;
}

const BACKSLASH = 0x5c;
const QUOTE = 0x22;

/**
 * A copy of `value` with the value of every key naming a secret (`namesSecret`) replaced, and every secret
 * inside a string (`redactText`), errors flattened to `{ name, code, message }` (stack traces and causes can
 * carry request bodies), cycles cut.
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
    out[key] = namesSecret(key) ? REDACTED : redact(item, seen);
  }
  return out;
}
