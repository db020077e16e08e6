import winston from 'winston';
import { redact } from './redact';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** The logging surface every library takes injected. Fields are merged into the JSON line. */
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

function wrap(target: winston.Logger): Logger {
  return {
    debug: (message, fields) => void target.debug(message, fields),
    info: (message, fields) => void target.info(message, fields),
    warn: (message, fields) => void target.warn(message, fields),
    error: (message, fields) => void target.error(message, fields),
    child: (fields) => wrap(target.child(fields)),
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
