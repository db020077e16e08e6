export { createLogger, silentLogger } from './logger';
export type { Logger, LoggerOptions, LogLevel } from './logger';
export { namesSecret, redact, redactText, REDACTED } from './redact';
