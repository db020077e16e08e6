import type { VulnerabilitySummary } from '@urs/contracts';
import { createAnsweredCalls } from '@urs/store';
import { testRedisPerTest } from '@urs/testkit';

const summary = (totalCveCount: number): VulnerabilitySummary => ({
  criticalCveCount: 1,
  totalCveCount,
  maxCvss: 9.8,
  cvssThreshold: 9,
  topCveIds: ['CVE-2026-0001'],
});

describe('createAnsweredCalls', () => {
  const redis = testRedisPerTest();
  const key = (): string => `${redis.prefix}vuln-answers:t1:c1:0`;

  it('read should give null for a batch with no answers kept, and create nothing', async () => {
    const answers = createAnsweredCalls(redis.client, redis.prefix);
    expect(await answers.read('t1', 'c1', 0)).toBeNull();
    expect(await redis.client.exists(key())).toBe(0);
  });

  it('read should give the answers kept, with the time of the latest, even when an earlier one is kept last', async () => {
    const answers = createAnsweredCalls(redis.client, redis.prefix);
    // Two answers written together, as a batch writes those of a moment.
    await answers.keep('t1', 'c1', 0, [
      { deviceId: 'd1', summary: summary(1), at: '2026-01-01T10:00:02.000Z' },
      { deviceId: 'd2', summary: summary(2), at: '2026-01-01T10:00:03.000Z' },
    ]);
    // Another replica's late write of an earlier answer.
    await answers.keep('t1', 'c1', 0, [
      { deviceId: 'd3', summary: summary(3), at: '2026-01-01T10:00:01.000Z' },
    ]);
    const kept = await createAnsweredCalls(redis.client, redis.prefix).read('t1', 'c1', 0);
    expect(kept?.collectedAt).toBe('2026-01-01T10:00:03.000Z');
    expect(kept?.summaries).toEqual(
      new Map([
        ['d1', summary(1)],
        ['d2', summary(2)],
        ['d3', summary(3)],
      ]),
    );
  });

  it('keep should keep each batch of each cycle apart', async () => {
    const answers = createAnsweredCalls(redis.client, redis.prefix);
    await answers.keep('t1', 'c1', 0, [
      { deviceId: 'd1', summary: summary(1), at: '2026-01-01T10:00:01.000Z' },
    ]);
    expect(await answers.read('t1', 'c1', 1)).toBeNull();
    expect(await answers.read('t1', 'c2', 0)).toBeNull();
    expect(await answers.read('t2', 'c1', 0)).toBeNull();
  });

  it('keep and read should start the expiry again, and forget should let the answers go', async () => {
    const answers = createAnsweredCalls(redis.client, redis.prefix, 60_000);
    await answers.keep('t1', 'c1', 0, [
      { deviceId: 'd1', summary: summary(1), at: '2026-01-01T10:00:01.000Z' },
    ]);
    const ttl = await redis.client.pttl(key());
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60_000);
    // Shortened by hand, as time passing would: a read of the held batch keeps its answers longer.
    await redis.client.pexpire(key(), 1_000);
    await answers.read('t1', 'c1', 0);
    expect(await redis.client.pttl(key())).toBeGreaterThan(1_000);
    await redis.client.pexpire(key(), 1_000);
    await answers.keep('t1', 'c1', 0, [
      { deviceId: 'd2', summary: summary(2), at: '2026-01-01T10:00:02.000Z' },
    ]);
    expect(await redis.client.pttl(key())).toBeGreaterThan(1_000);
    await answers.forget('t1', 'c1', 0);
    expect(await redis.client.exists(key())).toBe(0);
    expect(await answers.read('t1', 'c1', 0)).toBeNull();
  });
});
