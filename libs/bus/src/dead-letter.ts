import type { DeadLetter } from '@urs/contracts';
import { redact } from '@urs/logging';
import { errorCode, errorMessage } from '@urs/resilience';

/** A dead letter keeps at most this much of the original payload. */
const MAX_PAYLOAD_CHARS = 256 * 1024;
/** Catches `"clientSecret": "…"` (and any key naming a secret or password) in text that is not valid JSON. */
const SECRET_IN_TEXT = /("[^"]*(?:secret|password)[^"]*"\s*:\s*)"(?:[^"\\]|\\.)*"/gi;

/**
 * The payload as text with every secret removed. Director's pushes carry client secrets in clear, and
 * a dead letter must not become a second place where they live.
 */
export function redactPayload(text: string): string {
  try {
    return JSON.stringify(redact(JSON.parse(text)));
  } catch {
    return text.replace(SECRET_IN_TEXT, '$1"[redacted]"');
  }
}

export interface FailedMessage {
  service: string;
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
}

export function toDeadLetter(message: FailedMessage, error: unknown, now: Date = new Date()): DeadLetter {
  const payload = message.value === null ? null : redactPayload(message.value.toString('utf8'));
  return {
    schemaVersion: 1,
    service: message.service,
    sourceTopic: message.topic,
    partition: message.partition,
    offset: message.offset,
    key: message.key === null ? null : message.key.toString('utf8'),
    error: { code: errorCode(error), message: redactPayload(errorMessage(error)) },
    payload: payload === null ? null : payload.slice(0, MAX_PAYLOAD_CHARS),
    failedAt: now.toISOString(),
  };
}
