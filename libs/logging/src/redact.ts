/**
 * A key (lower case, without `-`, `_`, `.` and spaces, so `client_secret`, `Client-Secret` and `clientSecret`
 * alike) whose value is a secret: client secrets and assertions, passwords, credentials, API, access, account,
 * shared, private and signing keys (`x-api-key`, `SharedAccessKey`, `privateKey`), authorization headers and
 * cookies, tokens (`x-ms-token-aad-access-token`, `refresh_token`, `apiTokens`, `tokenValue`), signatures and
 * shared access signatures (`sas`, `sasUrl`, `blobSas`, a SAS URL's `sig`), and the encrypted secret envelope
 * (no reason to spread ciphertext through logs either). `token` only at the end (`tokenIssued`, `tokenType`
 * and `tokenEndpoint` say how a token went, not what it is); `sas` only at either end, never before an `l`
 * (`saslMechanism`, `disasterRecovery` are no secrets).
 */
const SECRET_NAME = new RegExp(
  [
    'secret|password|passwd|credential|authorization|bearer|ciphertext|cookie|assertion|signature',
    '(?:api|access|account|shared|private|signing)keys?',
    'token(?:s|value)?$',
    '^sas(?!l)|sas$|^sig$',
  ].join('|'),
);
/**
 * ...unless the key names a fact about the secret rather than the secret itself: which one (`secretName`,
 * `clientSecretKeyId`), whether one is set (`clientSecretSet`), its kind (`client_assertion_type`), when it
 * expires or its version. Such values are what an operator needs to find the secret, and never open it.
 */
const ABOUT_A_SECRET = /(?:name|id|set|type|expires|expiresat|expireson|version)$/;

export const REDACTED = '[redacted]';

/**
 * Whether the value of the field named `key` is a secret (see SECRET_NAME and ABOUT_A_SECRET): the one rule
 * for every redaction, of a log line's fields and text here and of a dead letter's payload (`@urs/bus`).
 */
export function namesSecret(key: string): boolean {
  const name = key.toLowerCase().replace(/[\s_.-]/g, '');
  return SECRET_NAME.test(name) && !ABOUT_A_SECRET.test(name);
}

/**
 * A quoted key and its colon, at any depth of escaping: `"key": `, `\"key\": ` (JSON quoted inside a JSON
 * string), `\\\"key\\\": `. Group 1 is the backslashes before each quote. It starts only where a run of
 * backslashes does, and the key holds no quote or backslash, so no stretch of the text is tried more than twice.
 */
const QUOTED_KEY = /(?<!\\)(\\*)"([^"\\]*)\1"\s*:\s*/g;

/**
 * A key of an object as `util.inspect` writes it (`{ clientSecret: 'abc', tries: 3 }`): unquoted, after `{` or
 * `,` (group 1, with the spaces after it), so that prose with a colon is no key. Group 2 is the key. It starts
 * only at a `{` or `,`, so no stretch of the text is tried more than twice.
 */
const INSPECTED_KEY = /([{,]\s*)([A-Za-z_$][\w$]*)\s*:\s*/g;

/**
 * The password of a URL's user information (`redis://:secret@host`, `amqp://user:secret@host`). The scheme
 * starts where a run of its characters does; group 1 is all before the password.
 */
const URL_PASSWORD = /((?<![\w+.-])[a-z][\w+.-]*:\/\/[^\s:@/"'\\]*:)[^\s@/"'\\]+(?=@)/gi;

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
 * - the value of every quoted field whose key names a secret (`namesSecret`), at any depth of escaping: a
 *   string's contents (one whose closing quote is missing, text cut short, up to the end of the text), and a
 *   number, array or object whole;
 * - the value of every field of an object as `util.inspect` writes it (`{ clientSecret: 'abc' }`) whose key
 *   names a secret;
 * - the password of a URL's user information (`redis://:secret@host`);
 * - the value of every form or query field whose key names a secret;
 * - the credentials of an authorization header, of `Bearer …`, and every JWT.
 * A key that names a fact about a secret (`secretName`, `clientSecretKeyId`) keeps its value, and so does
 * prose about secrets. Each pattern starts only where a run of the characters it takes starts, and stops at
 * the first one it cannot take: the time taken grows with the text's length, whatever the text.
 */
export function redactText(text: string): string {
  return redactInspectedFields(redactQuotedFields(text))
    .replace(URL_PASSWORD, `$1${REDACTED}`)
    .replace(FORM_FIELD, (field, key: string) => (namesSecret(key.slice(0, -1)) ? key + REDACTED : field))
    .replace(AUTHORIZATION, `$1${REDACTED}`)
    .replace(BEARER, `$1${REDACTED}`)
    .replace(JWT, REDACTED);
}

/**
 * `text` with the value of every quoted field whose key names a secret replaced: a string's contents, or a
 * value of any other kind (a number, an array, an object) whole, written as a string of the field's depth.
 */
function redactQuotedFields(text: string): string {
  const pattern = new RegExp(QUOTED_KEY);
  let out = '';
  let copied = 0;
  for (let match = pattern.exec(text); match !== null; match = pattern.exec(text)) {
    const escapes = (match[1] as string).length;
    // 0, 1, 3, 7… backslashes: a quote at some depth of escaping; any other count is no quote of a key.
    if ((escapes & (escapes + 1)) !== 0 || !namesSecret(match[2] as string)) continue;
    const quote = `${match[1] as string}"`;
    const start = pattern.lastIndex;
    let end: number;
    if (text.startsWith(quote, start)) {
      end = closingQuote(text, start + quote.length, escapes);
      out += text.slice(copied, start + quote.length) + REDACTED;
    } else {
      end = valueEnd(text, start, (from) => jsonStringEnd(text, from, escapes));
      if (end === start) continue;
      out += text.slice(copied, start) + quote + REDACTED + quote;
    }
    copied = end;
    pattern.lastIndex = end;
  }
  return out + text.slice(copied);
}

/** `text` with the value of every field of an inspected object (INSPECTED_KEY) whose key names a secret replaced. */
function redactInspectedFields(text: string): string {
  const pattern = new RegExp(INSPECTED_KEY);
  let out = '';
  let copied = 0;
  for (let match = pattern.exec(text); match !== null; match = pattern.exec(text)) {
    if (!namesSecret(match[2] as string)) continue;
    const start = pattern.lastIndex;
    const quote = text[start] ?? '';
    let end: number;
    if (INSPECTED_QUOTES.includes(quote)) {
      end = inspectedStringEnd(text, start);
      out += text.slice(copied, start + 1) + REDACTED;
    } else {
      end = valueEnd(text, start, (from) => Math.min(inspectedStringEnd(text, from) + 1, text.length));
      if (end === start) continue;
      out += `${text.slice(copied, start)}'${REDACTED}'`;
    }
    copied = end;
    pattern.lastIndex = end;
  }
  return out + text.slice(copied);
}

const INSPECTED_QUOTES = `'"\``;

/**
 * Where the value that is not a string starting at `from` ends: after its closing bracket, for an array or an
 * object (brackets inside its strings not counted: `stringEnd` gives where a string opening at an index ends,
 * past its closing quote); else at the first comma, bracket, quote, backslash or space. The text's end when
 * cut short.
 */
function valueEnd(text: string, from: number, stringEnd: (from: number) => number): number {
  if (text[from] !== '[' && text[from] !== '{') {
    const end = text.slice(from).search(/[\s,[\]{}"'`\\]/);
    return end === -1 ? text.length : from + end;
  }
  let depth = 0;
  for (let index = from; index < text.length;) {
    const char = text[index] as string;
    if (char === '"' || char === '\\' || INSPECTED_QUOTES.includes(char)) {
      const end = stringEnd(index);
      if (end > index) {
        index = end;
        continue;
      }
    }
    if (char === '[' || char === '{') depth += 1;
    if (char === ']' || char === '}') depth -= 1;
    index += 1;
    if (depth === 0) return index;
  }
  return text.length;
}

/**
 * Where the JSON string whose opening quote (escaped by `escapes` backslashes) starts at `from` ends, past its
 * closing quote; `from` itself when no such quote starts there.
 */
function jsonStringEnd(text: string, from: number, escapes: number): number {
  const quote = `${'\\'.repeat(escapes)}"`;
  if (!text.startsWith(quote, from)) return from;
  return Math.min(closingQuote(text, from + quote.length, escapes) + quote.length, text.length);
}

/**
 * Where the inspected string opening at `from` ends: the index of its closing quote, or the text's end when
 * cut short; `from - 1` when no string opens there.
 */
function inspectedStringEnd(text: string, from: number): number {
  const quote = text[from];
  if (quote === undefined || !INSPECTED_QUOTES.includes(quote)) return from - 1;
  for (let index = from + 1; index < text.length; index += 1) {
    if (text[index] === '\\') index += 1;
    else if (text[index] === quote) return index;
  }
  return text.length;
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
