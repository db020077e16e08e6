import { createCycleStore } from '@urs/store';
import { testRedisPerTest } from '@urs/testkit';
import { batch, cve, message, setup } from './handler-support';

describe('createEnrichHandler on a batch delivered again, over the cycle store in Redis', () => {
  const redis = testRedisPerTest();

  it('should ask Defender once and send one enriched batch, the record kept with an expiry', async () => {
    const asked: string[] = [];
    const { handler, sent } = setup(
      {
        machineVulnerabilities: async (id) => {
          asked.push(id);
          return [cve('CVE-1', 9.8)];
        },
      },
      { cycles: createCycleStore(redis.client, redis.prefix) },
    );
    await handler(message(batch()));
    await handler(message(batch()));
    expect(asked.sort()).toEqual(['d1', 'd2', 'd3']);
    expect(sent).toHaveLength(1);
    expect(await redis.client.pttl(`${redis.prefix}cycle-enriched:t1:c1`)).toBeGreaterThan(0);
  });
});
