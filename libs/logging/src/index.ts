export { createLogger, silentLogger } from './logger';
export type { Logger, LoggerOptions, LogLevel } from './logger';
export { redact, redactText, REDACTED } from './redact';
