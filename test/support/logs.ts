import type { Logger } from '@urs/logging';

/** One line a `capturingLogger` kept: its level, message and fields. */
export type LogLine = { level: string; message: string } & Record<string, unknown>;

/** A logger that keeps every line it is given in `lines`; its children log into the same lines. */
export function capturingLogger(lines: LogLine[]): Logger {
  const log =
    (level: string) =>
    (message: string, fields?: Record<string, unknown>): void => {
      lines.push({ ...fields, level, message });
    };
  const logger: Logger = {
    debug: log('debug'),
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
    child: () => logger,
  };
  return logger;
}
