import type { Logger } from '@urs/logging';

/** One line a `capturingLogger` kept: its level, message and fields (its logger's bound fields first). */
export type LogLine = { level: string; message: string } & Record<string, unknown>;

/**
 * A logger that keeps every line it is given in `lines`; its children log into the same lines, each line
 * carrying the fields its child was made with (a tenant's or a cycle's id), as the real logger's do.
 */
export function capturingLogger(lines: LogLine[], bound: Record<string, unknown> = {}): Logger {
  const log =
    (level: string) =>
    (message: string, fields?: Record<string, unknown>): void => {
      lines.push({ ...bound, ...fields, level, message });
    };
  return {
    debug: log('debug'),
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
    child: (fields) => capturingLogger(lines, { ...bound, ...fields }),
  };
}
