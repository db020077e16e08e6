import type { ChainableCommander, default as Redis } from 'ioredis';

/*
 * A key a holder owns by its value (a token): a lease, a claim, a lock taken with `SET … NX PX`. Only the
 * holder whose token the key still holds may extend it or give it back, so a holder whose key lapsed and
 * was taken by another never touches the other's.
 */

/**
 * Lua: `owned(key, token)`, whether `key` holds `token`; for a script that writes only while its caller
 * still owns a key (`if not owned(KEYS[1], ARGV[1]) then return 0 end`).
 */
export const OWNED_LUA = `
local function owned(key, token) return redis.call('GET', key) == token end`;

// KEYS[1] the key; ARGV: token, ttl ms. A holder that has the key already takes it again.
export const TAKE_UNLESS_HELD = `
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`;

// KEYS[1] the key; ARGV: token, ttl ms.
const RENEW_IF_OWNED = `${OWNED_LUA}
if not owned(KEYS[1], ARGV[1]) then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`;

// KEYS[1] the key; ARGV: token.
const DELETE_IF_OWNED = `${OWNED_LUA}
if not owned(KEYS[1], ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1`;

/**
 * Takes `key` for `token` for `ttlMs` (1) unless another token holds it (0); the holder of `token` takes it
 * again. Added to a transaction, so the calls that need the key held go with it in one round trip.
 */
export function takeOwnedKeyIn(
  transaction: ChainableCommander,
  key: string,
  token: string,
  ttlMs: number,
): ChainableCommander {
  return transaction.eval(TAKE_UNLESS_HELD, 1, key, token, String(ttlMs));
}

/** `takeOwnedKeyIn` on its own; false when another token holds `key`. */
export async function takeOwnedKey(
  redis: Redis,
  key: string,
  token: string,
  ttlMs: number,
): Promise<boolean> {
  return (await redis.eval(TAKE_UNLESS_HELD, 1, key, token, String(ttlMs))) === 1;
}

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

/** `releaseOwnedKey` added to a transaction, so a holder gives its key back with its last writes. */
export function releaseOwnedKeyIn(
  transaction: ChainableCommander,
  key: string,
  token: string,
): ChainableCommander {
  return transaction.eval(DELETE_IF_OWNED, 1, key, token);
}
