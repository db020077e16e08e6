import type { EnrichedBatch, ScoreBatch, TenantRecord } from '@urs/contracts';
import { compileProfile, parseProfile } from '@urs/scoring';
import { inboundMessage, tenantRecord, testRedisPerTest } from '@urs/testkit';
import { enrichedBatch, scorerOnRedis } from './support/scorer-on-redis';

/**
 * The scorer against the real Redis when a batch comes again to another scorer after the tenant changed its
 * profile: a scorer stopped after it stored and sent a batch, before it committed its offset (a rolling deploy,
 * a rebalance), and a scorer started since, which holds only the tenant's newer profile (it read `urs.tenants`
 * to its end, the earlier revision compacted away), scores the batch again. The store keeps the first scores (an equal stamp is a redelivery); what the batch sends on must be
 * those, or VMS would hold the second scores while the cycle's summary, the devices API and a snapshot say
 * the first.
 */
describe('createScoreHandler and a batch delivered again', () => {
  const redis = testRedisPerTest();
  const tenantId = 't1';

  const withProfile = (revision: number, riskProfile: Record<string, unknown>): TenantRecord => {
    const record = tenantRecord(tenantId, { revision });
    return { ...record, defender: { ...record.defender, riskProfile } };
  };
  const operationalOnly = { weights: { criticalRisk: 0, operational: 100 } };
  const halfAndHalf = { weights: { criticalRisk: 50, operational: 50 } };
  const started = compileProfile(parseProfile(operationalOnly));
  const next = compileProfile(parseProfile(halfAndHalf));

  /** A batch of the cycle that started with `operationalOnly`: two devices unseen for 20 days, no critical risk. */
  const batchOf = (cycleId: string, cycleStartedAt: string, profileHash: string): EnrichedBatch => ({
    ...enrichedBatch(tenantId, cycleId, cycleStartedAt),
    profileHash,
    devices: ['d1', 'd2'].map((id) => ({
      machine: {
        id,
        riskScore: 'None',
        exposureLevel: 'None',
        lastSeen: new Date(Date.parse(cycleStartedAt) - 20 * 86_400_000).toISOString(),
      },
      vulnerabilities: {
        criticalCveCount: 0,
        totalCveCount: 0,
        maxCvss: null,
        cvssThreshold: 9,
        topCveIds: [],
      },
    })),
  });

  /** A scorer that read the tenant's profile `operationalOnly` from `urs.tenants`. */
  async function firstScorer() {
    const first = scorerOnRedis(redis, tenantId, { caughtUp: true });
    await first.state.markRebuilt(new Date());
    const before = withProfile(1, operationalOnly);
    await first.tenants.put(before);
    await first.tenantsHandler(inboundMessage(before, { key: tenantId }));
    return first;
  }

  it('should send a batch scored again with a newer profile with the scores stored the first time', async () => {
    const first = await firstScorer();
    const c1 = batchOf('c1', new Date(Date.now() - 120_000).toISOString(), started.hash);
    await first.score(c1);

    // The tenant changes its weights; the first scorer stops before committing the batch, and one started
    // since, with only the newer profile, scores it again.
    const after = withProfile(2, halfAndHalf);
    await first.tenants.put(after);
    const second = scorerOnRedis(redis, tenantId, { caughtUp: true });
    await second.tenantsHandler(inboundMessage(after, { key: tenantId }));
    await second.score(c1);

    const sentFirst = first.sent as ScoreBatch[];
    const sentAgain = second.sent as ScoreBatch[];
    expect(sentFirst[0]?.devices.map((device) => [device.score, device.profileHash])).toEqual([
      [100, started.hash],
      [100, started.hash],
    ]);
    const stored = (await second.scores.getDeviceScores(tenantId, ['d1', 'd2'])).map((item) => item.device);
    expect(stored).toEqual(sentFirst[0]?.devices);
    // What the publisher counts (the value) and what it publishes to VMS (the JSON bytes) alike.
    expect(sentAgain[0]?.devices).toEqual(stored);
    expect((JSON.parse(String(second.sentJson[0])) as ScoreBatch).devices).toEqual(stored);
    expect(sentAgain[0]).toMatchObject({ cycleId: 'c1', batchIndex: 0, totalDevices: 2 });

    // The scorer started since scores the tenant's next cycle with the newer profile, and stores it.
    await second.score(batchOf('c2', new Date(Date.now() - 60_000).toISOString(), next.hash));
    expect(sentAgain[1]?.devices.map((device) => [device.score, device.profileHash])).toEqual([
      [50, next.hash],
      [50, next.hash],
    ]);
    expect((await second.scores.getDeviceScore(tenantId, 'd1'))?.device.score).toBe(50);
  });

  it('should send a correction handled again with a newer profile with the scores it stored, saying the same it replaced', async () => {
    const first = await firstScorer();
    const c1 = batchOf('c1', new Date(Date.now() - 120_000).toISOString(), started.hash);
    await first.score(c1);
    const correction: EnrichedBatch = {
      ...c1,
      batchIndex: 1,
      lastBatch: false,
      collectedAt: new Date(Date.parse(c1.cycleStartedAt) + 30_000).toISOString(),
      devices: [],
      corrections: [
        {
          deviceId: 'd1',
          vulnerabilities: {
            criticalCveCount: 3,
            totalCveCount: 3,
            maxCvss: 9.8,
            cvssThreshold: 9,
            topCveIds: [],
          },
        },
      ],
    };
    delete correction.totalBatches;
    delete correction.totalDevices;
    await first.score(correction);

    const after = withProfile(2, halfAndHalf);
    await first.tenants.put(after);
    const second = scorerOnRedis(redis, tenantId, { caughtUp: true });
    await second.tenantsHandler(inboundMessage(after, { key: tenantId }));
    await second.score(correction);

    const [sentFirst, sentAgain] = [first.sent[1], second.sent[0]] as ScoreBatch[];
    const stored = await second.scores.getDeviceScore(tenantId, 'd1');
    expect(stored?.device.profileHash).toBe(started.hash);
    expect(sentFirst?.devices).toEqual([stored?.device]);
    expect(sentAgain?.devices).toEqual([stored?.device]);
    expect((JSON.parse(String(second.sentJson[0])) as ScoreBatch).devices).toEqual([stored?.device]);
    expect(sentAgain?.replaces).toEqual(sentFirst?.replaces);
  });
});
