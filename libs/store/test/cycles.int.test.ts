import { createCycleStore } from '@urs/store';
import { testRedisPerTest } from '@urs/testkit';

describe('createCycleStore', () => {
  const redis = testRedisPerTest();

  const startedMs = Date.now();
  const begin = {
    tenantId: 'acme',
    cycleId: 'c1',
    startedAt: new Date(startedMs).toISOString(),
    deadlineAt: new Date(startedMs + 10 * 60_000).toISOString(),
  };
  const afterDeadline = new Date(startedMs + 11 * 60_000);

  it('recordBatch should count a redelivered batch once', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    expect(await cycles.recordBatch('acme', 'c1', 0, { devices: 500 })).toEqual({
      first: true,
      scoredBatches: 1,
    });
    expect(await cycles.recordBatch('acme', 'c1', 0, { devices: 500 })).toEqual({
      first: false,
      scoredBatches: 1,
    });
    expect(await cycles.recordBatch('acme', 'c1', 1, { devices: 12 })).toEqual({
      first: true,
      scoredBatches: 2,
    });
    const stats = await cycles.batchStats<{ devices: number }>('acme', 'c1');
    expect([...stats.entries()].sort()).toEqual([
      [0, { devices: 500 }],
      [1, { devices: 12 }],
    ]);
  });

  it('get should show the totals once the poller has listed every device', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    expect(await cycles.get('acme', 'c1')).toMatchObject({ scoredBatches: 0, deadlineAt: begin.deadlineAt });
    await cycles.listed('acme', 'c1', {
      totalBatches: 2,
      totalDevices: 512,
      listedAt: new Date().toISOString(),
    });
    expect(await cycles.get('acme', 'c1')).toMatchObject({ totalBatches: 2, totalDevices: 512 });
    expect(await cycles.get('acme', 'unknown')).toBeNull();
  });

  it('claimPublication should let exactly one caller publish and close the cycle', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    expect(await cycles.overdue(afterDeadline)).toEqual([{ tenantId: 'acme', cycleId: 'c1' }]);
    const claims = await Promise.all([
      cycles.claimPublication('acme', 'c1', 'complete'),
      cycles.claimPublication('acme', 'c1', 'partial'),
    ]);
    expect(claims.filter(Boolean)).toHaveLength(1);
    expect((await cycles.get('acme', 'c1'))?.published).toBe('complete');
    expect(await cycles.overdue(afterDeadline)).toEqual([]);
  });
});
