import type Redis from 'ioredis';

/**
 * The fingerprint of each secret key id (an HMAC of a constant under the key, never the key): the first
 * process that proves or claims a key id writes it, every later one compares its own with it, so a new key no
 * stored secret uses yet is still checked across the stages. Kept without expiry; after a Redis wipe the
 * stored secrets (rebuilt from urs.tenants) prove the keys again. Never replaced by a process: a mistyped key
 * would then overwrite the right one's. When the first fingerprint is a mistyped key's, and nothing is sealed
 * under its key id yet, an operator deletes it (`where`); otherwise the new key takes a new key id.
 */
export interface KeyFingerprintStore {
  get(keyId: string): Promise<string | null>;
  /** Writes `fingerprint` unless one is stored; answers the one stored afterwards. */
  claim(keyId: string, fingerprint: string): Promise<string>;
  /** The Redis key of `keyId`'s fingerprint (`<prefix>secret-key-fingerprint:<keyId>`), named in refusals. */
  where(keyId: string): string;
}

export function createKeyFingerprintStore(redis: Redis, prefix: string): KeyFingerprintStore {
  const keyOf = (keyId: string) => `${prefix}secret-key-fingerprint:${keyId}`;
  return {
    get: (keyId) => redis.get(keyOf(keyId)),
    where: keyOf,
    async claim(keyId, fingerprint) {
      const results = await redis.multi().set(keyOf(keyId), fingerprint, 'NX').get(keyOf(keyId)).exec();
      const stored = results?.[1]?.[1];
      return typeof stored === 'string' ? stored : fingerprint;
    },
  };
}
