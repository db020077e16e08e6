import { ApiError } from './router';

/**
 * What the routes that depend on the tenants in Redis await first (`ensureRebuilt`): until the registrar's
 * first rebuild from `urs.tenants` succeeded (Kafka away at start) a 503 at once, in the shape of the stop's
 * SHUTTING_DOWN, rather than a request held until Kafka answers; then `ready` (a Redis wiped meanwhile is
 * refilled before the request goes on).
 */
export function rebuiltGate(isRebuilt: () => boolean, ready: () => Promise<void>): () => Promise<void> {
  return async () => {
    if (!isRebuilt()) {
      throw new ApiError(
        503,
        'NOT_READY',
        'the registrar has not rebuilt its tenants from Kafka (urs.tenants) yet, Kafka did not answer: retry shortly',
        [],
        { 'retry-after': '5' },
      );
    }
    await ready();
  };
}
