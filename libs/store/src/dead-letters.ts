import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import type { DeadLetterLedger, DeadLetterSource } from '@urs/bus';
import { releaseOwnedKey } from './owned-key';

export interface DeadLetterLedgerOptions {
  /**
   * How long a written dead letter is remembered, ms, from the last time a reader met its record again.
   * Default 30 days: `urs.tenants` is compacted, so an invalid record stays until its tenant is written
   * again; a record met again after this long is dead-lettered once more.
   */
  writtenTtlMs?: number;
  /**
   * How long a claim holds without being marked written, ms: a writer that died after claiming leaves the
   * letter to a later reader this long after. Default 120000, well past a produce's retries.
   */
  claimTtlMs?: number;
}

const DEFAULT_WRITTEN_TTL_MS = 30 * 24 * 60 * 60 * 1000;
const DEFAULT_CLAIM_TTL_MS = 120_000;
const WRITTEN = 'written';

// KEYS[1] the source's key; ARGV: this writer's claim, claim ttl ms, written ttl ms. A writer that holds the
// claim already (a retry after its write failed and its release did too) takes it again. Answers 1 claimed,
// 2 written, 0 claimed by another writer.
const CLAIM = `
local value = redis.call('GET', KEYS[1])
if not value or value == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if value == '${WRITTEN}' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 2
end
return 0`;

/**
 * The cluster's `DeadLetterLedger` in Redis. A claim met on a written mark keeps it another `writtenTtlMs`, so
 * it lasts as long as replicas keep reading the record; a claim of another process holds `claimTtlMs`.
 * Keys: `{prefix}dead-lettered:{topic}:{partition}:{offset}:{timestamp}:{code}`, holding a writer's claim
 * or `written`. The claim is unique to this ledger: each process makes one.
 */
export function createDeadLetterLedger(
  redis: Redis,
  prefix: string,
  options: DeadLetterLedgerOptions = {},
): DeadLetterLedger {
  const writtenTtlMs = options.writtenTtlMs ?? DEFAULT_WRITTEN_TTL_MS;
  const claimTtlMs = options.claimTtlMs ?? DEFAULT_CLAIM_TTL_MS;
  const claim = `claimed:${randomUUID()}`;
  const keyOf = (source: DeadLetterSource): string =>
    `${prefix}dead-lettered:${source.topic}:${source.partition}:${source.offset}:${source.timestamp}:${source.code}`;
  return {
    async claim(source) {
      const taken = await redis.eval(
        CLAIM,
        1,
        keyOf(source),
        claim,
        String(claimTtlMs),
        String(writtenTtlMs),
      );
      return taken === 1 ? 'claimed' : taken === 2 ? 'written' : 'busy';
    },
    async written(source) {
      await redis.set(keyOf(source), WRITTEN, 'PX', writtenTtlMs);
    },
    async release(source) {
      await releaseOwnedKey(redis, keyOf(source), claim);
    },
  };
}
