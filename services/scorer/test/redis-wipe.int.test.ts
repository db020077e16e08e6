import type { TenantRecord } from '@urs/contracts';
import { canRetry, isInfrastructureFault } from '@urs/resilience';
import { deleteKeysMatching, inboundMessage, tenantRecord, testRedisPerTest } from '@urs/testkit';
import { enrichedBatch, scorerOnRedis } from './support/scorer-on-redis';

/**
 * The scorer against the real Redis after Redis lost its data (this project's Redis keeps nothing on disk):
 * until the registrar has rebuilt the tenant records from `urs.tenants` (its `tenants-rebuilt` marker), a
 * tenant Redis does not know is not a deleted one. Its batches are held and tried again, not dropped (their
 * scores would be lost for the cycle) nor dead-lettered; once the records are back they are stored and sent.
 */
describe('createScoreHandler after a Redis wipe', () => {
  const redis = testRedisPerTest();
  const tenantId = 't1';

  const enriched = (cycleId: string, cycleStartedAt: string) =>
    enrichedBatch(tenantId, cycleId, cycleStartedAt);

  /** A scorer; `caughtUp`: its profiles read `urs.tenants` to the end (else they come from Redis). */
  function scorer(caughtUp: boolean) {
    const scorer = scorerOnRedis(redis, tenantId, { caughtUp });
    /** The registrar's rebuild: the records written back from `urs.tenants`, then its marker. */
    const rebuild = async (...records: TenantRecord[]) => {
      for (const record of records) await scorer.tenants.put(record);
      await scorer.state.markRebuilt(new Date());
    };
    /** Redis comes back empty: every key of this test's prefix gone (never FLUSHALL: Redis is shared). */
    const wipe = async () => {
      await deleteKeysMatching(redis.client, `${redis.prefix}*`);
      expect(await redis.client.exists(`${redis.prefix}tenant:${tenantId}`)).toBe(0);
    };
    return { ...scorer, rebuild, wipe };
  }

  /** The batch's failure: the bus holds it and tries again (a dependency's fault), never dead-letters it. */
  async function heldFailure(scoring: Promise<void>): Promise<unknown> {
    const failure = await scoring.then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeDefined();
    expect(isInfrastructureFault(failure)).toBe(true);
    expect(canRetry(failure)).toBe(true);
    return failure;
  }

  const record = tenantRecord(tenantId);
  const c1 = enriched('c1', new Date(Date.now() - 120_000).toISOString());
  const c2 = enriched('c2', new Date(Date.now() - 60_000).toISOString());

  it('should hold a batch whose profile is in memory until the records are rebuilt, then store and send it', async () => {
    const { sent, score, stored, dropped, rebuild, wipe, tenantsHandler } = scorer(true);
    await rebuild(record);
    await tenantsHandler(inboundMessage(record, { key: tenantId }));
    await score(c1);
    expect(await stored()).toBe(2);

    await wipe();
    await heldFailure(score(c2));
    // Tried again before the rebuild: held again, still nothing stored, sent or counted dropped.
    await heldFailure(score(c2));
    expect(await stored()).toBe(0);
    expect(sent).toHaveLength(1);
    expect(dropped()).toBe(0);

    await rebuild(record);
    await score(c2);
    expect(await stored()).toBe(2);
    expect(sent).toHaveLength(2);
    expect(sent[1]).toMatchObject({ tenantId, cycleId: 'c2' });
    expect(dropped()).toBe(0);
  });

  it('should hold the batch of a scorer started after the wipe (its profile read from Redis) until the rebuild', async () => {
    const { sent, score, stored, dropped, rebuild, wipe } = scorer(false);
    await wipe();
    await heldFailure(score(c2));
    expect(await stored()).toBe(0);
    expect(sent).toHaveLength(0);
    expect(dropped()).toBe(0);

    await rebuild(record);
    await score(c2);
    expect(await stored()).toBe(2);
    expect(sent).toHaveLength(1);
  });

  it('should hold the batch of a tenant whose profile is in memory, not caught up, until the rebuild', async () => {
    const { sent, score, stored, dropped, rebuild, wipe, tenantsHandler } = scorer(false);
    await rebuild(record);
    await tenantsHandler(inboundMessage(record, { key: tenantId }));
    await wipe();
    await heldFailure(score(c2));
    expect(dropped()).toBe(0);

    await rebuild(record);
    await score(c2);
    expect(await stored()).toBe(2);
    expect(sent).toHaveLength(1);
  });

  it('should still drop the batch of a tenant the rebuilt records no longer hold (deleted meanwhile)', async () => {
    const { sent, score, stored, dropped, rebuild, wipe, tenantsHandler } = scorer(true);
    await rebuild(record);
    await tenantsHandler(inboundMessage(record, { key: tenantId }));
    await wipe();
    // Rebuilt from `urs.tenants` without it: its tombstone was there, the scorer has not read it yet.
    await rebuild();
    await score(c2);
    expect(await stored()).toBe(0);
    expect(sent).toHaveLength(0);
    expect(dropped()).toBe(1);
  });

  it('should still refuse the batch of a tenant the rebuilt records never held (TENANT_UNKNOWN), once urs.tenants was read', async () => {
    const { score, rebuild, wipe } = scorer(true);
    await wipe();
    await rebuild();
    const failure = await score(c2).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toMatchObject({ code: 'TENANT_UNKNOWN', canRetry: false });
    expect(isInfrastructureFault(failure)).toBe(false);
  });

  it('should hold the batch of a tenant the rebuilt records never held while urs.tenants is still read (its deletion may be to come)', async () => {
    const { score, rebuild, wipe } = scorer(false);
    await wipe();
    await rebuild();
    expect(await heldFailure(score(c2))).toMatchObject({ code: 'PROFILE_NOT_READ_YET' });
  });
});
