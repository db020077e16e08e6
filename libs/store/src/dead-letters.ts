import { randomUUID } from 'node:crypto';
import type Redis from 'ioredis';
import { releaseOwnedKey } from './owned-key';

/** One failure of one consumed message: what a dead letter is written for. */
export interface DeadLetterSource {
  topic: string;
  partition: number;
  offset: string;
  /**
   * The message's broker timestamp, epoch ms as text: with the offset it tells a record from one a topic
   * deleted and made again holds at the same offset.
   */
  timestamp: string;
  /** The failure's code: another failure of the same record is another dead letter. */
  code: string;
}

/**
 * Which dead letters the cluster has written, so that a record every replica reads again at every start
 * (`urs.tenants`, read from the beginning in a group of each replica's own) goes to the dead-letter topic
 * once, not once per replica per restart. A writer claims a source, writes its letter, then marks it written;
 * a writer that fails gives its claim back, and one that dies leaves it to lapse, so that the letter is
 * written by a later reader instead of never.
 */
export interface DeadLetterLedger {
  /**
   * True when this process is to write the source's dead letter now: nobody has, and nobody else is
   * writing it. False when it was written (its mark then kept another `writtenTtlMs`, so it lasts as long as
   * replicas keep reading the record) or another process claimed it within `claimTtlMs`.
   */
  claim(source: DeadLetterSource): Promise<boolean>;
  /** The claimed source's dead letter is on the dead-letter topic. */
  written(source: DeadLetterSource): Promise<void>;
  /** The claimed source's dead letter could not be written: another reader (or this one, again) may. */
  release(source: DeadLetterSource): Promise<void>;
}

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
// claim already (a retry after its write failed and its release did too) takes it again.
const CLAIM = `
local value = redis.call('GET', KEYS[1])
if not value or value == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if value == '${WRITTEN}' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 0`;

/**
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
      return taken === 1;
    },
    async written(source) {
      await redis.set(keyOf(source), WRITTEN, 'PX', writtenTtlMs);
    },
    async release(source) {
      await releaseOwnedKey(redis, keyOf(source), claim);
    },
  };
}
