import type { DeadLetterSource } from '@urs/bus';
import { createDeadLetterLedger } from '@urs/store';
import { testRedisPerTest, waitFor } from '@urs/testkit';

const source: DeadLetterSource = {
  topic: 'urs.tenants',
  partition: 2,
  offset: '41',
  timestamp: '1764979200000',
  code: 'CONTRACT_INVALID',
};

describe('createDeadLetterLedger', () => {
  const redis = testRedisPerTest();

  it('claim should admit one writer of a dead letter in the cluster, tell the others it is busy, and none once it is written', async () => {
    const first = createDeadLetterLedger(redis.client, redis.prefix);
    const second = createDeadLetterLedger(redis.client, redis.prefix);
    expect(await first.claim(source)).toBe('claimed');
    expect(await second.claim(source)).toBe('busy');
    await first.written(source);
    expect(await second.claim(source)).toBe('written');
    expect(await first.claim(source)).toBe('written');
    expect(await createDeadLetterLedger(redis.client, redis.prefix).claim(source)).toBe('written');
  });

  it('claim should tell apart another failure, offset or record of the same place', async () => {
    const ledger = createDeadLetterLedger(redis.client, redis.prefix);
    await ledger.claim(source);
    await ledger.written(source);
    const other = createDeadLetterLedger(redis.client, redis.prefix);
    expect(await other.claim({ ...source, code: 'RETRIES_EXHAUSTED' })).toBe('claimed');
    expect(await other.claim({ ...source, offset: '42' })).toBe('claimed');
    expect(await other.claim({ ...source, partition: 3 })).toBe('claimed');
    // The topic deleted and made again: another record at the same offset.
    expect(await other.claim({ ...source, timestamp: '1764979300000' })).toBe('claimed');
  });

  it('release should let another writer claim a letter whose write failed; the claimant may claim again', async () => {
    const first = createDeadLetterLedger(redis.client, redis.prefix);
    const second = createDeadLetterLedger(redis.client, redis.prefix);
    expect(await first.claim(source)).toBe('claimed');
    expect(await first.claim(source)).toBe('claimed');
    await second.release(source);
    expect(await second.claim(source)).toBe('busy');
    await first.release(source);
    expect(await second.claim(source)).toBe('claimed');
  });

  it('claim should lapse after claimTtlMs when its writer died, and a written mark last writtenTtlMs from its last reader', async () => {
    // Times no stall of a loaded machine comes near: the claim's lapse is waited for, the mark's read in Redis.
    const options = { claimTtlMs: 5_000, writtenTtlMs: 600_000 };
    const dead = createDeadLetterLedger(redis.client, redis.prefix, options);
    const next = createDeadLetterLedger(redis.client, redis.prefix, options);
    const key = redis.key(
      `dead-lettered:${source.topic}:${source.partition}:${source.offset}:${source.timestamp}:${source.code}`,
    );
    expect(await dead.claim(source)).toBe('claimed');
    expect(await next.claim(source)).toBe('busy');
    expect(await redis.client.pttl(key)).toBeGreaterThan(0);
    expect(await redis.client.pttl(key)).toBeLessThanOrEqual(5_000);
    await waitFor(async () => (await next.claim(source)) === 'claimed', {
      timeoutMs: 20_000,
      intervalMs: 250,
    });
    await next.written(source);
    expect(await redis.client.pttl(key)).toBeGreaterThan(500_000);
    // Met again with a minute left: remembered another writtenTtlMs from then.
    await redis.client.pexpire(key, 60_000);
    expect(await dead.claim(source)).toBe('written');
    expect(await redis.client.pttl(key)).toBeGreaterThan(500_000);
    expect(await redis.client.pttl(key)).toBeLessThanOrEqual(600_000);
    // Forgotten once its time is out: the record is dead-lettered again.
    await redis.client.pexpire(key, 1);
    await waitFor(async () => (await redis.client.exists(key)) === 0);
    expect(await dead.claim(source)).toBe('claimed');
  });
});
