import { readCvss } from '@urs/contracts/vulnerabilities';
import type { RowReader } from './odata-rows';
import {
  bulkRowDeviceId,
  parseSoftwareVulnerabilityRow,
  type SoftwareVulnerabilityRow,
  type Vulnerability,
  vulnerabilityFromRow,
} from './schema';

/**
 * What a bulk row leaves once read: its device and CVE (none for a software-only row), or why it was
 * skipped, with its device when the row names one (the device had a row, which could not be read).
 */
export type BulkRowEntry =
  { deviceId: string; vulnerability: Vulnerability | undefined } | { invalid: string; deviceId?: string };

/** Reduces one parsed export row (~1 KB of JSON) to the few fields the device summaries need. */
export function bulkRowEntry(raw: unknown): BulkRowEntry {
  const parsed = parseSoftwareVulnerabilityRow(raw);
  if (!parsed.ok) {
    const deviceId = bulkRowDeviceId(raw);
    return deviceId === undefined ? { invalid: parsed.reason } : { invalid: parsed.reason, deviceId };
  }
  return { deviceId: parsed.value.deviceId, vulnerability: vulnerabilityFromRow(parsed.value) };
}

// Byte values are local constants here and in odata-rows on purpose: imported from one shared module they
// are property loads in the hot loops, and the row reader measured ~30 % slower (2.8 → 3.9 µs per row).
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const CLOSE_OBJECT = 0x7d;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

/** Bytes that may follow a backslash (besides `u` and its four hex digits). */
const SIMPLE_ESCAPES = new Set([...'"\\/bfnrt'].map((c) => c.charCodeAt(0)));
/** Arrays nested deeper than this are left to the whole parse (a row has flat arrays of paths). */
const MAX_ARRAY_DEPTH = 8;
/** 10^k for the fraction digits of a score read as integer / 10^k. */
const POWERS_OF_TEN = [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/**
 * The byte at `at`, or -1 past the end. Reads past the end of a typed array give undefined, and code
 * that meets them runs about twice as slow, so every read that may run over goes through here.
 */
function byteAt(bytes: Buffer, at: number): number {
  return at < bytes.length ? (bytes[at] as number) : -1;
}

function isWhitespace(byte: number): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

function isDigit(byte: number): boolean {
  return byte >= ZERO && byte <= NINE;
}

function isHex(byte: number): boolean {
  const lower = byte | 0x20;
  return isDigit(byte) || (lower >= 0x61 && lower <= 0x66);
}

function skipWhitespace(bytes: Buffer, at: number): number {
  while (isWhitespace(byteAt(bytes, at))) at++;
  return at;
}

function skipDigits(bytes: Buffer, at: number): number {
  while (isDigit(byteAt(bytes, at))) at++;
  return at;
}

/**
 * The offset of the closing quote of the string whose text starts at `at`, or -1 when it is not valid
 * JSON or, unless `escapes`, has an escape (a key is compared as its bytes).
 */
function stringEnd(bytes: Buffer, at: number, escapes: boolean): number {
  const end = bytes.length;
  while (at < end) {
    const byte = bytes[at] as number;
    if (byte >= 0x20 && byte !== QUOTE && byte !== BACKSLASH) at++;
    else if (byte === QUOTE) return at;
    else if (byte !== BACKSLASH || !escapes) return -1;
    else at = escapeEnd(bytes, at);
    if (at < 0) return -1;
  }
  return -1;
}

/** The offset just past the escape whose backslash is at `at`, or -1 when it is not a JSON escape. */
function escapeEnd(bytes: Buffer, at: number): number {
  const escaped = byteAt(bytes, at + 1);
  if (SIMPLE_ESCAPES.has(escaped)) return at + 2;
  if (escaped !== 0x75) return -1;
  for (let digit = at + 2; digit < at + 6; digit++) if (!isHex(byteAt(bytes, digit))) return -1;
  return at + 6;
}

/** Like `stringEnd` for text kept as is: printable ASCII without escapes, else -1. */
function asciiStringEnd(bytes: Buffer, at: number): number {
  for (const end = bytes.length; at < end; at++) {
    const byte = bytes[at] as number;
    if (byte === QUOTE) return at;
    if (byte < 0x20 || byte === BACKSLASH || byte >= 0x80) return -1;
  }
  return -1;
}

/** The offset just past the JSON number at `at`, or -1 when there is none or it runs to the end. */
function numberEnd(bytes: Buffer, at: number): number {
  if (byteAt(bytes, at) === MINUS) at++;
  const first = byteAt(bytes, at);
  if (first === ZERO) at++;
  else if (isDigit(first)) at = skipDigits(bytes, at + 1);
  else return -1;
  if (byteAt(bytes, at) === DOT) {
    if (!isDigit(byteAt(bytes, ++at))) return -1;
    at = skipDigits(bytes, at);
  }
  if ((byteAt(bytes, at) | 0x20) === 0x65) {
    const sign = byteAt(bytes, ++at);
    if (sign === PLUS || sign === MINUS) at++;
    if (!isDigit(byteAt(bytes, at))) return -1;
    at = skipDigits(bytes, at);
  }
  return at < bytes.length ? at : -1;
}

/** The offset just past `literal` when it is at `at`, else -1. */
function literalEnd(bytes: Buffer, at: number, literal: Buffer): number {
  if (at + literal.length > bytes.length) return -1;
  for (let index = 0; index < literal.length; index++) if (bytes[at + index] !== literal[index]) return -1;
  return at + literal.length;
}

const TRUE = Buffer.from('true');
const FALSE = Buffer.from('false');
const NULL = Buffer.from('null');

/** The offset just past the JSON value at `at` (objects excepted), or -1 when it is not one. */
function valueEnd(bytes: Buffer, at: number, depth: number): number {
  switch (byteAt(bytes, at)) {
    case QUOTE: {
      const end = stringEnd(bytes, at + 1, true);
      return end < 0 ? -1 : end + 1;
    }
    case OPEN_ARRAY:
      return depth < MAX_ARRAY_DEPTH ? arrayEnd(bytes, at, depth + 1) : -1;
    case 0x74:
      return literalEnd(bytes, at, TRUE);
    case 0x66:
      return literalEnd(bytes, at, FALSE);
    case 0x6e:
      return literalEnd(bytes, at, NULL);
    default:
      return numberEnd(bytes, at);
  }
}

function arrayEnd(bytes: Buffer, at: number, depth: number): number {
  at = skipWhitespace(bytes, at + 1);
  if (byteAt(bytes, at) === CLOSE_ARRAY) return at + 1;
  for (;;) {
    at = valueEnd(bytes, at, depth);
    if (at < 0) return -1;
    at = skipWhitespace(bytes, at);
    const next = byteAt(bytes, at);
    if (next === CLOSE_ARRAY) return at + 1;
    if (next !== COMMA) return -1;
    at = skipWhitespace(bytes, at + 1);
  }
}

/** The members `bulkRowEntry` reads, in the order of `FIELD_KEYS`. */
const DEVICE_ID = 0;
const CVE_ID = 1;
const CVSS_SCORE = 2;
const SEVERITY = 3;
// 4: exploitabilityLevel.
/** Any other member. */
const OTHER = -1;
/** A key that only differs in case from one that is read: normalising keys decides which value counts. */
const CASE_VARIANT = -2;
const FIELD_KEYS = [
  'deviceId',
  'cveId',
  'cvssScore',
  'vulnerabilitySeverityLevel',
  'exploitabilityLevel',
].map((key) => Buffer.from(key));

/** The read member whose key has a given length (the lengths differ), or OTHER. */
const FIELD_BY_LENGTH = new Int8Array(32).fill(OTHER);
FIELD_KEYS.forEach((key, field) => (FIELD_BY_LENGTH[key.length] = field));

/**
 * Which read member the key between `from` and `to` names. Keys are matched ignoring ASCII case only: no
 * other character lower-cases to an ASCII letter of these keys (the Kelvin sign, the one non-ASCII
 * character that lower-cases to ASCII, becomes `k`).
 */
function fieldOf(bytes: Buffer, from: number, to: number): number {
  const field = to - from < FIELD_BY_LENGTH.length ? (FIELD_BY_LENGTH[to - from] as number) : OTHER;
  if (field === OTHER) return OTHER;
  const key = FIELD_KEYS[field] as Buffer;
  let exact = true;
  for (let index = 0; index < key.length; index++) {
    const byte = bytes[from + index] as number;
    const expected = key[index] as number;
    if (byte === expected) continue;
    if ((byte | 0x20) !== (expected | 0x20)) return OTHER;
    exact = false;
  }
  return exact ? field : CASE_VARIANT;
}

const SEVERITIES = ['Low', 'Medium', 'High', 'Critical'];
const EXPLOITABILITY_LEVELS = ['NoExploit', 'ExploitIsPublic', 'ExploitIsVerified', 'ExploitIsInKit'];

/**
 * Reads export rows of the usual shape straight from their bytes: an object of members whose values are
 * strings, numbers, literals and arrays of them, with `deviceId` (plain ASCII, not empty), `cveId` (plain
 * ASCII or null), `cvssScore` (a number `readCvss` reads, or null) and the two levels (a documented value or null) each at
 * most once and in their documented case. Every other row (nested objects, escapes or non-ASCII text in
 * those members, an unknown level, a missing or mistyped field, invalid JSON) is declined, so the whole
 * parse and schema check report or reject it exactly as before. A row is checked to be valid JSON as it
 * is read; only the bytes of the few members are turned into values.
 */
export class BulkRowReader implements RowReader<BulkRowEntry> {
  value: BulkRowEntry = { invalid: 'no row read' };
  /** The members read of the current row, in the shape `vulnerabilityFromRow` takes. */
  private readonly row: SoftwareVulnerabilityRow = { deviceId: '' };
  /** Bit per read member seen in the current row. */
  private seen = 0;
  /** The last device id: a device's rows come one after the other, so its id is made once. */
  private lastDeviceId = '';

  read(bytes: Buffer, from: number): number {
    this.seen = 0;
    const row = this.row;
    row.cveId = null;
    row.cvssScore = null;
    row.vulnerabilitySeverityLevel = null;
    row.exploitabilityLevel = null;
    let at = skipWhitespace(bytes, from + 1);
    for (;;) {
      if (byteAt(bytes, at) !== QUOTE) return -1;
      const keyEnd = stringEnd(bytes, at + 1, false);
      if (keyEnd < 0) return -1;
      const field = fieldOf(bytes, at + 1, keyEnd);
      if (field === CASE_VARIANT) return -1;
      at = skipWhitespace(bytes, keyEnd + 1);
      if (byteAt(bytes, at) !== COLON) return -1;
      at = skipWhitespace(bytes, at + 1);
      at = field === OTHER ? valueEnd(bytes, at, 0) : this.member(field, bytes, at);
      if (at < 0) return -1;
      at = skipWhitespace(bytes, at);
      const next = byteAt(bytes, at);
      if (next === CLOSE_OBJECT) break;
      if (next !== COMMA) return -1;
      at = skipWhitespace(bytes, at + 1);
    }
    if ((this.seen & (1 << DEVICE_ID)) === 0) return -1;
    this.value = { deviceId: row.deviceId, vulnerability: vulnerabilityFromRow(row) };
    return at + 1;
  }

  /** Reads the value of a read member at `at` into the row (null leaves it null); the offset just past it, or -1. */
  private member(field: number, bytes: Buffer, at: number): number {
    if ((this.seen & (1 << field)) !== 0) return -1;
    this.seen |= 1 << field;
    const row = this.row;
    const first = byteAt(bytes, at);
    if (first === NULL[0]) return field === DEVICE_ID ? -1 : literalEnd(bytes, at, NULL);
    if (field === CVSS_SCORE) {
      const end = numberEnd(bytes, at);
      if (end < 0) return -1;
      // A score `readCvss` cannot read is declined: the whole parse skips the row, with the reason.
      const score = readCvss(numberValue(bytes, at, end));
      if (score === undefined) return -1;
      row.cvssScore = score;
      return end;
    }
    if (first !== QUOTE) return -1;
    const end = asciiStringEnd(bytes, at + 1);
    if (end < 0) return -1;
    if (field === DEVICE_ID) {
      if (end === at + 1) return -1;
      row.deviceId = this.deviceId(bytes, at + 1, end);
    } else if (field === CVE_ID) row.cveId = bytes.toString('latin1', at + 1, end);
    else {
      const level = documented(bytes, at + 1, end, field === SEVERITY ? SEVERITIES : EXPLOITABILITY_LEVELS);
      if (level === undefined) return -1;
      if (field === SEVERITY) row.vulnerabilitySeverityLevel = level;
      else row.exploitabilityLevel = level;
    }
    return end + 1;
  }

  private deviceId(bytes: Buffer, from: number, to: number): string {
    if (!spells(bytes, from, to, this.lastDeviceId)) this.lastDeviceId = bytes.toString('latin1', from, to);
    return this.lastDeviceId;
  }
}

/** Whether the bytes between `from` and `to` are exactly the ASCII `text`. */
function spells(bytes: Buffer, from: number, to: number, text: string): boolean {
  if (text.length !== to - from) return false;
  for (let index = 0; index < text.length; index++)
    if (text.charCodeAt(index) !== bytes[from + index]) return false;
  return true;
}

/** The value of `values` spelt by the ASCII bytes between `from` and `to`, exactly; undefined when none is. */
function documented(bytes: Buffer, from: number, to: number, values: readonly string[]): string | undefined {
  return values.find((value) => spells(bytes, from, to, value));
}

/**
 * The number between `from` and `to` (valid JSON), as JSON.parse gives it: a plain decimal of at most 15
 * digits is integer / 10^k, which is exact for both and so correctly rounded once; others go through Number.
 */
function numberValue(bytes: Buffer, from: number, to: number): number {
  const negative = bytes[from] === MINUS;
  let mantissa = 0;
  let digits = 0;
  let fraction = -1;
  for (let at = negative ? from + 1 : from; at < to; at++) {
    const byte = bytes[at] as number;
    if (byte === DOT) fraction = 0;
    else if (byte >= ZERO && byte <= NINE) {
      mantissa = mantissa * 10 + (byte - ZERO);
      digits++;
      if (fraction >= 0) fraction++;
    } else return Number(bytes.toString('latin1', from, to));
  }
  if (digits > 15) return Number(bytes.toString('latin1', from, to));
  const value = fraction > 0 ? mantissa / (POWERS_OF_TEN[fraction] as number) : mantissa;
  return negative ? -value : value;
}
