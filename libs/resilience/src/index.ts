export { UrsError, isUrsError, canRetry, errorCode, errorMessage } from './errors';
export type { UrsErrorOptions } from './errors';
export { isInfrastructureFault, isRedisReadOnlyReply } from './faults';
export { DEFAULT_RETRY_POLICY, RetryPolicyError, retryPolicy, retryDelayMs, withRetry, sleep } from './retry';
export type { RetryPolicy, RetryOptions } from './retry';
export { untilShutdownSignal, closeAll, keepRenewing } from './lifecycle';
export type { Closer } from './lifecycle';
export { OUTAGE_RETRY, retryThroughOutage, unlessAborted } from './outage';
export type { OutageLog, OutageRetryOptions } from './outage';
