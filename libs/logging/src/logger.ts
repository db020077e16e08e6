import winston from 'winston';
import { redact } from './redact';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/**
 * The logging surface every library takes injected. Fields are merged into the JSON line; a field named
 * `message` is written as `reason` (`detail` beside a `reason`): it never changes the line's own message.
 */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
  /** A logger whose lines all carry `fields` (e.g. tenantId, cycleId). */
  child(fields: Record<string, unknown>): Logger;
}

export interface LoggerOptions {
  /** Written as `service` on every line. */
  service: string;
  /** Lowest level written. Default: `info`. */
  level?: LogLevel;
  /** Where lines go. Default: standard output. */
  stream?: NodeJS.WritableStream;
}

const redactFormat = winston.format((info) => {
  const clean = redact({ ...info }) as Record<string | symbol, unknown>;
  for (const key of Object.keys(info)) delete (info as Record<string, unknown>)[key];
  Object.assign(info, clean);
  return info;
});

/** One JSON object per line: `{ level, time, service, message, ...fields }`, secrets redacted. */
export function createLogger(options: LoggerOptions): Logger {
  const transport = options.stream
    ? new winston.transports.Stream({ stream: options.stream })
    : new winston.transports.Console();
  const base = winston.createLogger({
    level: options.level ?? 'info',
    defaultMeta: { service: options.service },
    format: winston.format.combine(
      winston.format.timestamp({ alias: 'time' }),
      redactFormat(),
      winston.format.json(),
    ),
    transports: [transport],
  });
  return wrap(base);
}

/**
 * The fields as written. Winston appends a field named `message` to the line's own message ("device
 * vulnerabilities not fetched Stopped while…"), and a child's `message` is lost under the line's: so the line
 * keeps its own message, and the field is written as `reason` (as `detail` when there is a reason already).
 */
function ownFields(fields: Record<string, unknown>): Record<string, unknown>;
function ownFields(fields: Record<string, unknown> | undefined): Record<string, unknown> | undefined;
function ownFields(fields: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (fields === undefined || !Object.hasOwn(fields, 'message')) return fields;
  const { message, ...rest } = fields;
  return { ...rest, [Object.hasOwn(rest, 'reason') ? 'detail' : 'reason']: message };
}

function wrap(target: winston.Logger): Logger {
  return {
    debug: (message, fields) => void target.debug(message, ownFields(fields)),
    info: (message, fields) => void target.info(message, ownFields(fields)),
    warn: (message, fields) => void target.warn(message, ownFields(fields)),
    error: (message, fields) => void target.error(message, ownFields(fields)),
    child: (fields) => wrap(target.child(ownFields(fields))),
  };
}

/** A logger that writes nothing, for tests and tools. */
export const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
};
