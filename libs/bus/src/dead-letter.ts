import type { DeadLetter } from '@urs/contracts';
import { REDACTED, namesSecret, redact, redactText } from '@urs/logging';
import { errorCode, errorMessage } from '@urs/resilience';

/** A dead letter keeps at most this much of the original payload. */
const MAX_PAYLOAD_CHARS = 256 * 1024;
/**
 * A dead letter keeps at most this much of its error's message (redacted first). A reason listing every fault
 * of a message (a tenant entry with tens of thousands of unknown keys) would otherwise make a letter larger than
 * `urs.dlq` takes, and a letter Kafka refuses holds its message until an operator mends it.
 */
const MAX_ERROR_MESSAGE_CHARS = 16 * 1024;

/** `text` cut after `MAX_ERROR_MESSAGE_CHARS`, saying how long it was. */
function cutReason(text: string): string {
  if (text.length <= MAX_ERROR_MESSAGE_CHARS) return text;
  return `${text.slice(0, MAX_ERROR_MESSAGE_CHARS)}… (cut: ${text.length} characters in all)`;
}
/**
 * A key inside text, and what follows it: a run of the characters a key is spelled with (`x-api-key`,
 * `client_secret`, `defender.clientSecret`), closed by a quote at any depth of escaping or none, then `:` or
 * `=` (`"password":`, `\"clientSecret\":`, `'credential':`, `{ clientSecret: `, `sig=`, `password: `). The key
 * starts where a run of its characters does, so no stretch of the text is tried more than twice.
 */
const KEY_IN_TEXT = /(?<![\w.-])([\w.-]+)\\*["'`]?\s*[:=]/g;

/** `Bearer <credentials>` anywhere (the log's redaction keeps a short one as prose; a dead letter does not). */
const BEARER = /(?<![\w-])bearer\s+[^\s"'\\<>,;]/i;

/**
 * Whether text that cannot be read field by field may hold a secret: a key inside it names a secret as a key
 * of a field would (`namesSecret`, the rule the log's redaction keeps to), or the log's redaction finds a
 * secret in it (a URL's password, an authorization header, a JWT), or it holds `Bearer` credentials. Only
 * keys, not every word: device names and prose hold what a key naming a secret would (`KANSAS-WS-01`,
 * `sig-lab-01`, `Credential Guard`) and carry no secret. A `\u` escape may spell any key
 * (`"client\u0053ecret"`), so it counts as one.
 */
function mayHoldSecret(text: string): boolean {
  if (text.includes('\\u') || BEARER.test(text)) return true;
  for (const [, key] of text.matchAll(KEY_IN_TEXT)) {
    if (namesSecret(key as string)) return true;
  }
  return redactText(text) !== text;
}

/**
 * A dead letter's payload from the failed message's text: the text without anything that may be a secret.
 * `redactPayload` by default; a topic can give its own (see TopicSubscription.redactPayload).
 */
export type PayloadRedactor = (text: string) => string;

/**
 * The payload as text with every secret removed. Director's pushes carry client secrets in clear, and
 * a dead letter must not become a second place where they live.
 * - A JSON object or array: every secret-looking key's value is replaced (`redact`), and so is every
 *   string value that itself names a secret (a push sent as a JSON string inside a field).
 * - Anything else (not JSON, cut short, a JSON string holding a push): no field can be told from
 *   another, so text that names a secret is withheld whole; the dead letter's source position still
 *   finds it on its topic.
 */
export function redactPayload(text: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return withheldIfSecret(text);
  }
  if (parsed === null || typeof parsed !== 'object') return withheldIfSecret(text);
  return JSON.stringify(redactStrings(redact(parsed)));
}

function withheldIfSecret(text: string): string {
  return mayHoldSecret(text) ? withheldPayload(text) : text;
}

/** What a dead letter keeps of a payload that cannot be read field by field and may hold a secret: its length. */
export function withheldPayload(text: string): string {
  return `[withheld: ${Buffer.byteLength(text)} bytes that are not a JSON object and may hold a secret]`;
}

function redactStrings(value: unknown): unknown {
  if (typeof value === 'string') return mayHoldSecret(value) ? REDACTED : value;
  if (Array.isArray(value)) return value.map(redactStrings);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, redactStrings(item)]));
}

/**
 * Why a value is not JSON, without the value: V8's message quotes the text around an unexpected token,
 * which on `urs.registration` may be a client secret, so only the position it gives is kept. (The
 * parser's error is not kept as the cause either: the dead letter's and the log's text come from it.)
 */
export function notJsonReason(error: unknown): string {
  const message = errorMessage(error);
  const position = /at position (\d+)/.exec(message)?.[1];
  if (position !== undefined) return `the value is not JSON (at position ${position})`;
  return /["'`]/.test(message) ? 'the value is not JSON' : `the value is not JSON: ${message}`;
}

export interface FailedMessage {
  service: string;
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
}

/**
 * The payload through `redactor`; its length only when the redactor fails on it. JSON nested a few thousand
 * levels deep (a few KB: `JSON.parse` takes it) exhausts the stack of any recursive walk, and a letter that
 * cannot be made would hold its partition for good.
 */
function redactedOrWithheld(text: string, redactor: PayloadRedactor): string {
  try {
    return redactor(text);
  } catch (error) {
    const why = error instanceof RangeError ? 'nested too deep' : 'its redaction failed';
    return `[withheld: ${Buffer.byteLength(text)} bytes that could not be read field by field: ${why}]`;
  }
}

/**
 * The dead letter of a message that could not be processed: where it was, why (at `options.now`, default
 * now; cut after 16 Ki characters), and its payload through `options.redactPayload` (default `redactPayload`),
 * cut after 256 Ki characters.
 */
export function toDeadLetter(
  message: FailedMessage,
  error: unknown,
  options: { now?: Date; redactPayload?: PayloadRedactor } = {},
): DeadLetter {
  const now = options.now ?? new Date();
  const redactor = options.redactPayload ?? redactPayload;
  const payload =
    message.value === null ? null : redactedOrWithheld(message.value.toString('utf8'), redactor);
  return {
    schemaVersion: 1,
    service: message.service,
    sourceTopic: message.topic,
    partition: message.partition,
    offset: message.offset,
    key: message.key === null ? null : message.key.toString('utf8'),
    error: {
      code: errorCode(error),
      message: cutReason(redactText(errorMessage(error))),
    },
    payload: payload === null ? null : payload.slice(0, MAX_PAYLOAD_CHARS),
    failedAt: now.toISOString(),
  };
}
