import type Redis from 'ioredis';

/*
 * A key a holder owns by its value (a token): a lease, a claim, a lock taken with `SET … NX PX`. Only the
 * holder whose token the key still holds may extend it or give it back, so a holder whose key lapsed and
 * was taken by another never touches the other's.
 */

// KEYS[1] the key; ARGV: token, ttl ms.
const RENEW_IF_OWNED = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`;

// KEYS[1] the key; ARGV: token.
const DELETE_IF_OWNED = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1`;

/** Extends `key` by `ttlMs` from now if it still holds `token`; false when it lapsed (or another holds it). */
export async function renewOwnedKey(
  redis: Redis,
  key: string,
  token: string,
  ttlMs: number,
): Promise<boolean> {
  return (await redis.eval(RENEW_IF_OWNED, 1, key, token, String(ttlMs))) === 1;
}

/** Deletes `key` if it still holds `token`; false when it lapsed (or another holds it). */
export async function releaseOwnedKey(redis: Redis, key: string, token: string): Promise<boolean> {
  return (await redis.eval(DELETE_IF_OWNED, 1, key, token)) === 1;
}
