import { createRedisQuotaGate, type QuotaGate } from '@urs/defender';

/** A gate that never waits: every call goes straight to the shared call slots. */
export const UNLIMITED_QUOTA_GATE: QuotaGate = Object.freeze({
  acquire: async () => undefined,
  block: async () => undefined,
});

/**
 * The quota gate of the Defender calls: Microsoft's per-tenant quotas kept in Redis (shared by every
 * replica), or none when the API answering is a simulator with its quotas off (`URS_DEFENDER_QUOTAS=off`).
 */
export function quotaGateFor(
  mode: 'microsoft' | 'off',
  redis: Parameters<typeof createRedisQuotaGate>[0],
  keyPrefix: string,
): QuotaGate {
  return mode === 'off' ? UNLIMITED_QUOTA_GATE : createRedisQuotaGate(redis, keyPrefix);
}
