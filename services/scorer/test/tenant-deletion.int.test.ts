import type { TenantRecord } from '@urs/contracts';
import { createPublishedStore } from '@urs/store';
import { inboundMessage, markPublishedRebuilt, tenantRecord, testRedisPerTest } from '@urs/testkit';
import { enrichedBatch, scorerOnRedis } from './support/scorer-on-redis';

/**
 * The scorer against the real Redis while its tenant is deleted: the registrar sends the tombstone, then
 * removes the record from the tenant store; the publisher reads the tombstone, marks the tenant deleted and
 * removes its devices' scores. A batch still on its way must store no score after that (the devices API
 * would show them for ever) and must not be dead-lettered (it is expected, not poison).
 */
describe('createScoreHandler and a deleted tenant', () => {
  const redis = testRedisPerTest();
  const tenantId = 't1';

  const enriched = (cycleId: string, cycleStartedAt: string) =>
    enrichedBatch(tenantId, cycleId, cycleStartedAt);

  function setup() {
    const scorer = scorerOnRedis(redis, tenantId);
    const published = createPublishedStore(redis.client, redis.prefix);
    /**
     * The tenant registered, in the tenant store first and then on `urs.tenants`, as the registrar does; the
     * tenant store whole (the registrar's marker, set at its start): a missing record is then a deletion.
     */
    const register = async (record: TenantRecord) => {
      await scorer.state.markRebuilt(new Date());
      await scorer.tenants.put(record);
      await scorer.tenantsHandler(inboundMessage(record, { key: tenantId }));
    };
    return { ...scorer, published, register };
  }

  it('should store no score of a batch that comes after the deletion, in any order of its steps, and count it dropped', async () => {
    const { tenants, published, scores, sent, score, stored, dropped, register, tenantsHandler } = setup();
    await markPublishedRebuilt(published);
    await register(tenantRecord(tenantId));
    const c1 = enriched('c1', new Date(Date.now() - 60_000).toISOString());
    await score(c1);
    expect(await stored()).toBe(2);

    // The publisher read the tombstone first: its devices' scores are removed, the record not yet.
    await published.markDeleted(tenantId, Date.now());
    await scores.remove(tenantId, ['d1', 'd2']);
    await score(c1);
    expect(await stored()).toBe(0);

    // The registrar removed the record; the scorer, its profile still in memory, has not read the tombstone.
    await tenants.remove(tenantId);
    await score(c1);
    expect(await stored()).toBe(0);

    // The scorer read the tombstone: the batch is still dropped, not failed (and so not dead-lettered).
    await tenantsHandler(inboundMessage<TenantRecord>(null, { key: tenantId }));
    await expect(score(c1)).resolves.toBeUndefined();
    expect(await stored()).toBe(0);
    expect(sent).toHaveLength(1);
    expect(dropped()).toBe(3);
  });

  it('should score the tenant registered again, and still drop the batches of its cycles from before', async () => {
    const { published, sent, score, stored, dropped, register } = setup();
    await markPublishedRebuilt(published);
    const deletedAt = Date.now() - 60_000;
    await published.markDeleted(tenantId, deletedAt);
    await published.registeredAgain(tenantId, deletedAt + 1_000);
    await register(tenantRecord(tenantId, { revision: 3 }));

    await score(enriched('c1', new Date(deletedAt - 60_000).toISOString()));
    expect(await stored()).toBe(0);
    await score(enriched('c2', new Date(deletedAt + 2_000).toISOString()));
    expect(await stored()).toBe(2);
    expect(sent).toHaveLength(1);
    expect(dropped()).toBe(1);
  });

  it('should score the tenant registered again before the publisher records the registration', async () => {
    const { published, sent, score, stored, dropped, register } = setup();
    await markPublishedRebuilt(published);
    const deletedAt = Date.now() - 60_000;
    // The deletion (revision 2) is marked; the registration (revision 3) is in the tenant store, and the
    // publisher has not read it yet (no `registeredAt`).
    await published.markDeleted(tenantId, deletedAt, 2);
    await register(tenantRecord(tenantId, { revision: 3 }));

    await score(enriched('c1', new Date(deletedAt - 60_000).toISOString()));
    expect(await stored()).toBe(0);
    await score(enriched('c2', new Date(deletedAt + 2_000).toISOString()));
    expect(await stored()).toBe(2);
    expect(sent).toHaveLength(1);
    expect(dropped()).toBe(1);
  });
});
