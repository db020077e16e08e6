/**
 * The patterns, enumerations and fragments the message schemas share, and each pattern's rule in words.
 */

export const TENANT_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';
export const GUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
export const DIGITS_PATTERN = '^\\d+$';
/**
 * A client secret as Entra ID shows it: no white space at either end (a pasted line break, a padded cell), no
 * control character (C0, DEL, C1), no invisible format character (`\p{Cf}`: a zero-width space or word joiner
 * a copy from a web page or a chat picks up, a soft hyphen, a direction mark, a byte order mark) anywhere, and
 * no unpaired UTF-16 surrogate (ajv compiles patterns with the `u` flag, where one is a code point of its own).
 * Such a secret is never Entra's (its secrets are printable ASCII): sign-in would fail on it later, and an
 * unpaired surrogate does not survive sealing (UTF-8 makes it U+FFFD), so the stored secret never equals the
 * one sent and every identical push would count as a change. Inner spaces and letters beyond ASCII pass.
 */
export const CLIENT_SECRET_PATTERN =
  '^(?!\\s)[^\\u0000-\\u001F\\u007F-\\u009F\\uD800-\\uDFFF\\p{Cf}]*(?<!\\s)$';
export const CLIENT_SECRET_RULE =
  "must be the secret's Value as Entra ID shows it: no spaces or line breaks at its start or end, " +
  'no control characters, no invisible format characters (a zero-width space, a word joiner), ' +
  'no unpaired UTF-16 surrogates';
/** The rule of a tenant id in words, wherever one is refused (a push, a REST body or path). */
export const TENANT_ID_RULE =
  'must be 1–64 letters, digits, dots, dashes or underscores, starting with a letter or digit';
/**
 * Each pattern of these schemas in words: a rejection names the rule an administrator can follow, never the
 * regular expression. A new pattern gets its words here (a test checks that every pattern has them).
 */
export const PATTERN_RULES: ReadonlyMap<string, string> = new Map([
  [TENANT_ID_PATTERN, TENANT_ID_RULE],
  [GUID_PATTERN, 'must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)'],
  [DIGITS_PATTERN, 'must be digits only'],
  [CLIENT_SECRET_PATTERN, CLIENT_SECRET_RULE],
]);
export const CLOUDS = ['commercial', 'gcc', 'gcc-high', 'dod'] as const;
export const REGIONS = ['us', 'eu', 'uk', 'au', 'swa', 'ina', 'aea'] as const;

export const isoTime = { type: 'string', format: 'date-time' } as const;
export const nullableString = { type: ['string', 'null'] } as const;
export const tenantId = { type: 'string', pattern: TENANT_ID_PATTERN } as const;
