import type Redis from 'ioredis';

/**
 * The fingerprint of each secret key id (an HMAC of a constant under the key, never the key): the first
 * process that proves or claims a key id writes it, every later one compares its own with it, so a new key no
 * stored secret uses yet is still checked across the stages. Kept without expiry; after a Redis wipe the
 * stored secrets (rebuilt from urs.tenants) prove the keys again.
 */
export interface KeyFingerprintStore {
  get(keyId: string): Promise<string | null>;
  /** Writes `fingerprint` unless one is stored; answers the one stored afterwards. */
  claim(keyId: string, fingerprint: string): Promise<string>;
}

export function createKeyFingerprintStore(redis: Redis, prefix: string): KeyFingerprintStore {
  const keyOf = (keyId: string) => `${prefix}secret-key-fingerprint:${keyId}`;
  return {
    get: (keyId) => redis.get(keyOf(keyId)),
    async claim(keyId, fingerprint) {
      const results = await redis.multi().set(keyOf(keyId), fingerprint, 'NX').get(keyOf(keyId)).exec();
      const stored = results?.[1]?.[1];
      return typeof stored === 'string' ? stored : fingerprint;
    },
  };
}
