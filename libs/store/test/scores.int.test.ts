import type { ScoredDevice } from '@urs/contracts';
import {
  createCycleStore,
  createPublishedStore,
  createRegistrarStateStore,
  createScoreStore,
  createBulkVulnerabilityCache,
  createTenantStore,
  scoreStoreFor,
} from '@urs/store';
import {
  markPublishedRebuilt,
  scoredDevice,
  storeHistoryWithoutReasons,
  tenantRecord,
  testRedisPerTest,
  waitFor,
} from '@urs/testkit';

const device = (deviceId: string, score: number, band: ScoredDevice['band']): ScoredDevice =>
  scoredDevice(deviceId, score, band, { computerDnsName: `${deviceId}.example` });

const cycle = (cycleId: string, startedAt: string) => ({
  cycleId,
  cycleStartedAt: startedAt,
  collectedAt: startedAt,
  scoredAt: startedAt,
});

describe('createScoreStore', () => {
  const redis = testRedisPerTest();

  it('saveScores should never let an older or redelivered cycle overwrite a newer score, and answer what a redelivered one stored', async () => {
    const scores = createScoreStore(redis.client, redis.prefix, { historyLength: 3 });
    const newer = cycle('c2', '2026-01-01T10:10:00.000Z');
    const older = cycle('c1', '2026-01-01T10:00:00.000Z');
    expect(await scores.saveScores('t', newer, [device('d1', 70, 'Suspicious')])).toEqual({
      written: 1,
      skipped: [],
    });
    expect(
      await scores.saveScores('t', older, [device('d1', 10, 'Trustworthy'), device('d2', 30, 'Low Risk')]),
    ).toEqual({
      written: 1,
      skipped: ['d1'],
    });
    // Delivered again and scored again with another score (a newer profile): the first one stays, and is
    // answered. An older cycle's batch (above) is answered none.
    expect(await scores.saveScores('t', newer, [device('d1', 75, 'Suspicious')])).toEqual({
      written: 0,
      skipped: ['d1'],
      alreadyStored: [{ tenantId: 't', ...newer, device: device('d1', 70, 'Suspicious') }],
    });
    expect((await scores.getDeviceScore('t', 'd1'))?.device.score).toBe(70);
    expect((await scores.getDeviceScore('t', 'd1'))?.cycleId).toBe('c2');
    expect((await scores.history('t', 'd1')).map((s) => s.cycleId)).toEqual(['c2']);
  });

  it("saveScores should store a cycle's correction over its scores, and never over the next cycle's", async () => {
    const scores = createScoreStore(redis.client, redis.prefix);
    const first = cycle('c1', '2026-01-01T10:00:00.000Z');
    const correction = { ...cycle('c1', '2026-01-01T10:00:00.000Z'), correction: true };
    await scores.saveScores('t', first, [device('d1', 10, 'Trustworthy'), device('d2', 20, 'Trustworthy')]);
    const replaced = [{ band: 'Trustworthy' as const, incomplete: false }];
    expect(
      await scores.saveScores('t', correction, [device('d1', 55, 'Moderate Risk')], undefined, replaced),
    ).toEqual({
      written: 1,
      skipped: [],
    });
    expect((await scores.getDeviceScore('t', 'd1'))?.replaced).toEqual(replaced[0]);
    // Redelivered: the cycle's first score and the correction again both leave the correction stored; the
    // correction again is answered it, with what it replaced.
    expect(await scores.saveScores('t', first, [device('d1', 10, 'Trustworthy')])).toEqual({
      written: 0,
      skipped: ['d1'],
    });
    expect(await scores.saveScores('t', correction, [device('d1', 50, 'Moderate Risk')])).toEqual({
      written: 0,
      skipped: ['d1'],
      alreadyStored: [
        { tenantId: 't', ...first, device: device('d1', 55, 'Moderate Risk'), replaced: replaced[0] },
      ],
    });
    const stored = await scores.getDeviceScore('t', 'd1');
    expect(stored).toMatchObject({ cycleId: 'c1', device: { score: 55 } });
    expect(stored).not.toHaveProperty('correction');
    expect((await scores.history('t', 'd1')).map((entry) => [entry.cycleId, entry.score])).toEqual([
      ['c1', 55],
    ]);
    const next = cycle('c2', '2026-01-01T10:10:00.000Z');
    await scores.saveScores('t', next, [device('d1', 60, 'Moderate Risk'), device('d2', 90, 'High Risk')]);
    expect(await scores.getDeviceScore('t', 'd1')).not.toHaveProperty('replaced');
    expect(await scores.saveScores('t', correction, [device('d2', 30, 'Low Risk')])).toEqual({
      written: 0,
      skipped: ['d2'],
    });
    expect((await scores.getDeviceScore('t', 'd2'))?.cycleId).toBe('c2');
  });

  it('saveScores should keep newest-wins per device across a batch of several hundred', async () => {
    const scores = createScoreStore(redis.client, redis.prefix);
    const newer = cycle('c2', '2026-01-01T10:10:00.000Z');
    const older = cycle('c1', '2026-01-01T10:00:00.000Z');
    const ids = Array.from({ length: 450 }, (_, i) => `d${String(i).padStart(3, '0')}`);
    // Every third device already has a newer score: they are skipped wherever they fall in the batch.
    const ahead = ids.filter((_, i) => i % 3 === 0);
    await scores.saveScores(
      't',
      newer,
      ahead.map((id) => device(id, 90, 'High Risk')),
    );
    const result = await scores.saveScores(
      't',
      older,
      ids.map((id) => device(id, 20, 'Low Risk')),
    );
    expect(result).toEqual({ written: 300, skipped: ahead });
    const stored = await scores.getDeviceScores('t', ids);
    expect(stored.map((s) => [s.device.deviceId, s.device.score, s.cycleId])).toEqual(
      ids.map((id, i) => (i % 3 === 0 ? [id, 90, 'c2'] : [id, 20, 'c1'])),
    );
    const page = await scores.listDeviceScores('t', { band: 'Low Risk', limit: 1000 });
    expect(page.total).toBe(300);
    expect((await scores.history('t', 'd449')).map((s) => s.cycleId)).toEqual(['c1']);
    expect((await scores.history('t', 'd447')).map((s) => s.cycleId)).toEqual(['c2']);
  });

  it("saveScores should store the same record from the devices' JSON as from the devices", async () => {
    const scores = createScoreStore(redis.client, redis.prefix);
    const devices = [device('d1', 70, 'Suspicious'), device('d2', 5, 'Trustworthy')];
    await scores.saveScores('t', cycle('c1', '2026-01-01T10:00:00.000Z'), devices);
    const plain = await redis.client.hgetall(`${redis.prefix}scores:t`);
    await redis.client.del(`${redis.prefix}scores:t`, `${redis.prefix}score-stamps:t`);
    const json = devices.map((d) => JSON.stringify(d));
    await scores.saveScores('t', cycle('c1', '2026-01-01T10:00:00.000Z'), devices, json);
    expect(await redis.client.hgetall(`${redis.prefix}scores:t`)).toEqual(plain);
    expect(JSON.parse(plain['d1'] as string)).toEqual({
      tenantId: 't',
      ...cycle('c1', '2026-01-01T10:00:00.000Z'),
      device: devices[0],
    });
  });

  it('saveScores should not store again a device tombstoned by a cycle as new as the batch, and store it from a newer cycle', async () => {
    const scores = scoreStoreFor(redis.client, { keyPrefix: redis.prefix, scoreHistoryCycles: 10 });
    await createTenantStore(redis.client, redis.prefix).put(tenantRecord('t'));
    const c1 = cycle('c1', '2026-01-01T10:00:00.000Z');
    await scores.saveScores('t', c1, [device('d1', 10, 'Trustworthy')]);
    // The cycle of 10:30 completed with d1 absent: its tombstone sent, the publisher forgets it, then its score.
    await createPublishedStore(redis.client, redis.prefix).forget(
      't',
      ['d1'],
      Date.parse('2026-01-01T10:30:00.000Z'),
    );
    // Delivered again before its score is removed: not stored, nor answered as stored (it is gone).
    expect(await scores.saveScores('t', c1, [device('d1', 10, 'Trustworthy')])).toEqual({
      written: 0,
      skipped: ['d1'],
    });
    await scores.remove('t', ['d1']);
    // A batch of c1 delivered late, and its correction: d1 is not stored again, d2 (never tombstoned) is.
    expect(
      await scores.saveScores('t', c1, [device('d1', 10, 'Trustworthy'), device('d2', 30, 'Low Risk')]),
    ).toEqual({ written: 1, skipped: ['d1'] });
    expect(
      await scores.saveScores('t', { ...c1, correction: true }, [device('d1', 40, 'Moderate Risk')]),
    ).toEqual({ written: 0, skipped: ['d1'] });
    expect(await scores.getDeviceScore('t', 'd1')).toBeNull();
    expect(await scores.history('t', 'd1')).toEqual([]);
    // Listed again by a newer cycle: stored.
    const c4 = cycle('c4', '2026-01-01T10:40:00.000Z');
    expect(await scores.saveScores('t', c4, [device('d1', 20, 'Trustworthy')])).toEqual({
      written: 1,
      skipped: [],
    });
    expect((await scores.getDeviceScore('t', 'd1'))?.cycleId).toBe('c4');
  });

  it("remove with the tombstoning cycle's start should keep the score and history of a newer cycle stored before it", async () => {
    const scores = createScoreStore(redis.client, redis.prefix);
    await scores.saveScores('t', cycle('c1', '2026-01-01T10:00:00.000Z'), [
      device('d1', 10, 'Trustworthy'),
      device('d2', 30, 'Low Risk'),
    ]);
    // Cycle c4 lists d1 again and is stored before the completion of c3 (10:30), which tombstones both.
    await scores.saveScores('t', cycle('c4', '2026-01-01T10:40:00.000Z'), [device('d1', 20, 'Trustworthy')]);
    await scores.remove('t', ['d1', 'd2'], Date.parse('2026-01-01T10:30:00.000Z'));
    expect((await scores.getDeviceScore('t', 'd1'))?.cycleId).toBe('c4');
    expect((await scores.history('t', 'd1')).map((entry) => entry.cycleId)).toEqual(['c4']);
    expect(await scores.getDeviceScore('t', 'd2')).toBeNull();
    expect(await scores.history('t', 'd2')).toEqual([]);
    expect((await scores.listDeviceScores('t')).items.map((item) => item.device.deviceId)).toEqual(['d1']);
  });

  it('history should keep the newest scores first up to its length', async () => {
    const scores = createScoreStore(redis.client, redis.prefix, { historyLength: 2 });
    for (let minute = 0; minute < 4; minute++) {
      await scores.saveScores('t', cycle(`c${minute}`, `2026-01-01T10:0${minute}:00.000Z`), [
        device('d1', minute, 'Trustworthy'),
      ]);
    }
    expect((await scores.history('t', 'd1')).map((s) => s.score)).toEqual([3, 2]);
  });

  it("scoreStoreFor should keep and answer the deployment's URS_SCORE_HISTORY_CYCLES cycles under its key prefix", async () => {
    const config = { keyPrefix: redis.prefix, scoreHistoryCycles: 3 };
    await createTenantStore(redis.client, redis.prefix).put(tenantRecord('t'));
    const kept = scoreStoreFor(redis.client, config);
    for (let minute = 0; minute < 5; minute++) {
      await kept.saveScores('t', cycle(`c${minute}`, `2026-01-01T10:0${minute}:00.000Z`), [
        device('d1', minute, 'Trustworthy'),
      ]);
    }
    // What the scorer keeps, the registrar's store reads: three cycles, under the same keys.
    const read = scoreStoreFor(redis.client, config);
    expect((await read.history('t', 'd1')).map((s) => s.score)).toEqual([4, 3, 2]);
    expect((await read.getDeviceScore('t', 'd1'))?.cycleId).toBe('c4');
  });

  it('saveScores with onlyRegisteredTenants should store nothing of a tenant deleted, by its record or by its deletion marker', async () => {
    const scores = createScoreStore(redis.client, redis.prefix, { onlyRegisteredTenants: true });
    const tenants = createTenantStore(redis.client, redis.prefix);
    const published = createPublishedStore(redis.client, redis.prefix);
    await markPublishedRebuilt(published);
    await createRegistrarStateStore(redis.client, redis.prefix).markRebuilt(new Date());
    const before = cycle('c1', '2026-01-01T10:00:00.000Z');
    const after = cycle('c2', '2026-01-01T10:20:00.000Z');
    const refused = { written: 0, skipped: [], tenantDeleted: true };
    expect(await scores.saveScores('t', before, [device('d1', 1, 'Trustworthy')])).toEqual(refused);
    await tenants.put(tenantRecord('t'));
    // Deleted at 10:10 and registered again at 10:15: the cycle from before is the deleted tenant's.
    await published.markDeleted('t', Date.parse('2026-01-01T10:10:00.000Z'));
    expect(await scores.saveScores('t', before, [device('d1', 1, 'Trustworthy')])).toEqual(refused);
    await published.registeredAgain('t', Date.parse('2026-01-01T10:15:00.000Z'));
    expect(await scores.saveScores('t', before, [device('d1', 1, 'Trustworthy')])).toEqual(refused);
    expect(await scores.saveScores('t', after, [device('d1', 2, 'Trustworthy')])).toEqual({
      written: 1,
      skipped: [],
    });
    expect(await scores.getDeviceScore('t', 'd1')).toMatchObject({ cycleId: 'c2' });
  });

  it('saveScores with onlyRegisteredTenants should wait for the rebuild, not refuse as deleted, a tenant without a record after a Redis wipe', async () => {
    const scores = createScoreStore(redis.client, redis.prefix, { onlyRegisteredTenants: true });
    const tenants = createTenantStore(redis.client, redis.prefix);
    const state = createRegistrarStateStore(redis.client, redis.prefix);
    const published = createPublishedStore(redis.client, redis.prefix);
    const c1 = cycle('c1', '2026-01-01T10:00:00.000Z');
    const c2 = cycle('c2', '2026-01-01T10:20:00.000Z');
    // Redis came back empty: no record, no rebuild marker. Nothing stored, and not taken for a deletion.
    const waits = { written: 0, skipped: [], tenantsNotRebuilt: true };
    expect(await scores.saveScores('t', c1, [device('d1', 1, 'Trustworthy')])).toEqual(waits);
    expect(await scores.getDeviceScore('t', 'd1')).toBeNull();
    expect(await redis.client.exists(redis.key('score-cycles:t'))).toBe(0);
    // A deletion marker still says so, rebuilt or not.
    await markPublishedRebuilt(published);
    await published.markDeleted('t', Date.parse('2026-01-01T10:10:00.000Z'));
    expect(await scores.saveScores('t', c1, [device('d1', 1, 'Trustworthy')])).toEqual({
      written: 0,
      skipped: [],
      tenantDeleted: true,
    });
    // Registered again at 10:15, and rebuilt with its record: its cycle from then on is stored.
    await published.registeredAgain('t', Date.parse('2026-01-01T10:15:00.000Z'));
    await tenants.put(tenantRecord('t'));
    await state.markRebuilt(new Date());
    expect(await scores.saveScores('t', c2, [device('d1', 2, 'Trustworthy')])).toEqual({
      written: 1,
      skipped: [],
    });
  });

  it('saveScores with onlyRegisteredTenants should store the cycles of a tenant registered again from its deletion on, before the publisher records the registration', async () => {
    const scores = createScoreStore(redis.client, redis.prefix, { onlyRegisteredTenants: true });
    const tenants = createTenantStore(redis.client, redis.prefix);
    const published = createPublishedStore(redis.client, redis.prefix);
    await markPublishedRebuilt(published);
    await createRegistrarStateStore(redis.client, redis.prefix).markRebuilt(new Date());
    const refused = { written: 0, skipped: [], tenantDeleted: true };
    const written = { written: 1, skipped: [] };
    const deletedAt = Date.parse('2026-01-01T10:10:00.000Z');
    // Registered at revision 5, deleted at 10:10 with revision 6: the registrar removes the record.
    await tenants.put(tenantRecord('t', { revision: 5 }));
    await published.markDeleted('t', deletedAt, 6);
    expect(
      await scores.saveScores('t', cycle('c2', '2026-01-01T10:20:00.000Z'), [device('d1', 2, 'Trustworthy')]),
    ).toEqual(refused);
    await tenants.remove('t', 6);
    expect(
      await scores.saveScores('t', cycle('c2', '2026-01-01T10:20:00.000Z'), [device('d1', 2, 'Trustworthy')]),
    ).toEqual(refused);

    // Registered again (revision 7): the poller starts a cycle at once; the publisher has not read the
    // registration. A cycle from before the deletion is still the deleted tenant's.
    await tenants.put(tenantRecord('t', { revision: 7 }));
    expect(
      await scores.saveScores('t', cycle('c1', '2026-01-01T10:05:00.000Z'), [device('d1', 1, 'Trustworthy')]),
    ).toEqual(refused);
    expect(
      await scores.saveScores('t', cycle('c2', '2026-01-01T10:20:00.000Z'), [device('d1', 2, 'Trustworthy')]),
    ).toEqual(written);
    expect(await published.ofDeletedTenant('t', Date.parse('2026-01-01T10:20:00.000Z'))).toBe(false);
    expect(await published.ofDeletedTenant('t', Date.parse('2026-01-01T10:05:00.000Z'))).toBe(true);

    // The publisher records the registration at 10:30 by the registrar's clock; a cycle the poller's
    // clock, behind it, stamped 10:25 is the registration's all the same.
    await published.registeredAgain('t', Date.parse('2026-01-01T10:30:00.000Z'));
    expect(
      await scores.saveScores('t', cycle('c3', '2026-01-01T10:25:00.000Z'), [device('d2', 3, 'Trustworthy')]),
    ).toEqual(written);
    expect(await published.ofDeletedTenant('t', Date.parse('2026-01-01T10:25:00.000Z'))).toBe(false);
    // The deletion's removal keeps what the save let through.
    expect(await scores.removeTenant('t', { deletedRevision: 6 })).toBe(false);
    expect(
      (await scores.listDeviceScores('t')).items.map((item) => [item.device.deviceId, item.cycleId]),
    ).toEqual([
      ['d1', 'c2'],
      ['d2', 'c3'],
    ]);

    // Deleted again (revision 8), its record gone, then a record no newer than that deletion: refused.
    await published.markDeleted('t', Date.parse('2026-01-01T11:00:00.000Z'), 8);
    await tenants.remove('t', 8);
    await tenants.put(tenantRecord('t', { revision: 8 }));
    expect(
      await scores.saveScores('t', cycle('c4', '2026-01-01T11:10:00.000Z'), [device('d1', 4, 'Trustworthy')]),
    ).toEqual(refused);
    expect(await published.ofDeletedTenant('t', Date.parse('2026-01-01T11:10:00.000Z'))).toBe(true);
  });

  it('markDeleted should list the devices with a stored score beside the published ones, not those of a registration landing meanwhile', async () => {
    const scores = scoreStoreFor(redis.client, { keyPrefix: redis.prefix, scoreHistoryCycles: 10 });
    const tenants = createTenantStore(redis.client, redis.prefix);
    const published = createPublishedStore(redis.client, redis.prefix);
    await markPublishedRebuilt(published);
    await createRegistrarStateStore(redis.client, redis.prefix).markRebuilt(new Date());
    await tenants.put(tenantRecord('t', { revision: 5 }));
    // Cycle c1: d0 published and recorded; d1 scored, its record sent and the batch not recorded yet.
    const c1 = cycle('c1', '2026-01-01T10:00:00.000Z');
    await scores.saveScores('t', c1, [device('d0', 10, 'Trustworthy'), device('d1', 20, 'Trustworthy')]);
    await published.commit('t', Date.parse(c1.cycleStartedAt), [
      { deviceId: 'd0', score: 10, band: 'Trustworthy' },
    ]);
    // Deleted at 10:10 (revision 6) and registered again (revision 7) before the publisher reads the deletion:
    // the registration's first cycle stores d2.
    await tenants.put(tenantRecord('t', { revision: 7 }));
    await scores.saveScores('t', cycle('c2', '2026-01-01T10:20:00.000Z'), [device('d2', 30, 'Low Risk')]);

    const listed = await published.markDeleted('t', Date.parse('2026-01-01T10:10:00.000Z'), 6);
    expect(listed.sort()).toEqual(['d0', 'd1']);
    // Listed again on a deletion handled again, until the tombstones forget them.
    expect((await published.markDeleted('t', Date.parse('2026-01-01T10:10:00.000Z'), 6)).sort()).toEqual([
      'd0',
      'd1',
    ]);
  });

  it('removeTenant should forget every score, band, cycle and history of a deleted tenant, and only the cycles from before a registration again', async () => {
    const scores = createScoreStore(redis.client, redis.prefix);
    const published = createPublishedStore(redis.client, redis.prefix);
    await markPublishedRebuilt(published);
    const keys = async (tenantId: string): Promise<string[]> =>
      (await redis.client.keys(`${redis.prefix}score*:${tenantId}*`))
        .map((key) => key.slice(redis.prefix.length))
        .sort();
    for (const tenantId of ['t', 'other']) {
      await scores.saveScores(tenantId, cycle('c1', '2026-01-01T10:00:00.000Z'), [
        device('d1', 10, 'Trustworthy'),
        device('d2', 80, 'High Risk'),
      ]);
      await scores.saveScores(tenantId, cycle('c2', '2026-01-01T10:10:00.000Z'), [
        device('d1', 20, 'Trustworthy'),
      ]);
    }
    // Deleted at 10:15: every key of the tenant goes, the cycles' histories with them; the other tenant keeps its own.
    await published.markDeleted('t', Date.parse('2026-01-01T10:15:00.000Z'));
    expect(await scores.removeTenant('t', { deletedRevision: 5 })).toBe(true);
    expect(await keys('t')).toEqual([]);
    expect(await scores.listDeviceScores('t')).toEqual({ total: 0, items: [] });
    expect(await keys('other')).toEqual([
      'score-bands:other',
      'score-cycle-history:other:c1',
      'score-cycle-history:other:c2',
      'score-cycles:other',
      'score-stamps:other',
      'scores:other',
    ]);

    // Scored before a deletion at 10:25, and after the registration again at 10:30 the marker recorded: the
    // new registration's cycle and devices stay.
    await scores.saveScores('t', cycle('c2', '2026-01-01T10:10:00.000Z'), [
      device('d1', 20, 'Trustworthy'),
      device('d2', 80, 'High Risk'),
    ]);
    await scores.saveScores('t', cycle('c3', '2026-01-01T10:35:00.000Z'), [device('d1', 30, 'Low Risk')]);
    await published.markDeleted('t', Date.parse('2026-01-01T10:25:00.000Z'));
    await published.registeredAgain('t', Date.parse('2026-01-01T10:30:00.000Z'));
    expect(await scores.removeTenant('t', { deletedRevision: 7 })).toBe(true);
    expect(
      (await scores.listDeviceScores('t')).items.map((item) => [item.device.deviceId, item.cycleId]),
    ).toEqual([['d1', 'c3']]);
    expect((await scores.history('t', 'd1')).map((entry) => entry.cycleId)).toEqual(['c3']);
    expect(await keys('t')).toEqual([
      'score-bands:t',
      'score-cycle-history:t:c3',
      'score-cycles:t',
      'score-stamps:t',
      'scores:t',
    ]);

    // Deleted at 10:40 and a record newer than the deletion: registered again, which the marker does not
    // say yet, its first cycle scored already. What was scored before the deletion goes, that cycle stays.
    await scores.saveScores('t', cycle('c4', '2026-01-01T10:45:00.000Z'), [device('d2', 40, 'Low Risk')]);
    await published.markDeleted('t', Date.parse('2026-01-01T10:40:00.000Z'));
    await createTenantStore(redis.client, redis.prefix).put(tenantRecord('t', { revision: 9 }));
    expect(await scores.removeTenant('t', { deletedRevision: 8 })).toBe(false);
    expect(
      (await scores.listDeviceScores('t')).items.map((item) => [item.device.deviceId, item.cycleId]),
    ).toEqual([['d2', 'c4']]);
    expect(await keys('t')).toEqual([
      'score-bands:t',
      'score-cycle-history:t:c4',
      'score-cycles:t',
      'score-stamps:t',
      'scores:t',
    ]);
    // No deletion marker: nothing says which scores are the deleted tenant's.
    await redis.client.del(`${redis.prefix}published-deleted:t`);
    expect(await scores.removeTenant('t', { deletedRevision: 8 })).toBe(false);
    expect(await scores.getDeviceScore('t', 'd2')).toMatchObject({ cycleId: 'c4' });
    // The deletion of the registration newest: everything goes.
    await published.markDeleted('t', Date.parse('2026-01-01T10:50:00.000Z'));
    expect(await scores.removeTenant('t', { deletedRevision: 9 })).toBe(true);
    expect(await keys('t')).toEqual([]);

    // A cut of the caller's own (a deletion the record is newer than): whatever the marker says.
    await scores.saveScores('t', cycle('c5', '2026-01-01T11:00:00.000Z'), [
      device('d1', 50, 'Moderate Risk'),
    ]);
    await scores.saveScores('t', cycle('c6', '2026-01-01T11:10:00.000Z'), [
      device('d2', 60, 'Moderate Risk'),
    ]);
    const cut = Date.parse('2026-01-01T11:05:00.000Z');
    expect(await scores.removeTenant('t', { deletedRevision: 8, startedBefore: cut })).toBe(true);
    expect(await keys('t')).toEqual([
      'score-bands:t',
      'score-cycle-history:t:c6',
      'score-cycles:t',
      'score-stamps:t',
      'scores:t',
    ]);
  });

  it("history entries should name their cycle and its start, which the cycle's hash and the sorted set of cycles hold", async () => {
    const scores = createScoreStore(redis.client, redis.prefix);
    const scored = device('d1', 55, 'Moderate Risk');
    await scores.saveScores(
      't',
      { ...cycle('c1', '2026-01-01T10:00:00.000Z'), scoredAt: '2026-01-01T10:00:07.000Z' },
      [scored],
    );
    // A correction of the cycle stores its entry at a stamp half a millisecond later; the start stays.
    const correction = { ...cycle('c1', '2026-01-01T10:00:00.000Z'), scoredAt: '2026-01-01T10:00:09.000Z' };
    await scores.saveScores('t', { ...correction, correction: true }, [device('d1', 60, 'Moderate Risk')]);
    // An entry stored before entries were made compact, with the cycle's id and start in it.
    const old = {
      cycleId: 'c0',
      cycleStartedAt: '2026-01-01T09:50:00.000Z',
      scoredAt: '2026-01-01T09:50:05.000Z',
      score: 40,
      band: 'Low Risk',
      criticalScore: 20,
      operationalScore: 20,
      missing: ['vulnerabilities'],
    };
    await redis.client.zadd(`${redis.prefix}score-cycles:t`, Date.parse(old.cycleStartedAt), 'c0');
    await redis.client.hset(`${redis.prefix}score-cycle-history:t:c0`, 'd1', JSON.stringify(old));
    expect(await scores.history('t', 'd1')).toEqual([
      {
        cycleId: 'c1',
        cycleStartedAt: '2026-01-01T10:00:00.000Z',
        scoredAt: '2026-01-01T10:00:09.000Z',
        score: 60,
        band: 'Moderate Risk',
        criticalScore: scored.criticalScore,
        operationalScore: scored.operationalScore,
        missing: scored.missing,
      },
      old,
    ]);
    const stored = await redis.client.hget(`${redis.prefix}score-cycle-history:t:c1`, 'd1');
    expect(JSON.parse(stored ?? '{}')).not.toHaveProperty('cycleId');
    expect(JSON.parse(stored ?? '{}')).not.toHaveProperty('cycleStartedAt');
  });

  it('history entries should say why each missing signal is missing, as the score does, and read older entries without reasons', async () => {
    const scores = createScoreStore(redis.client, redis.prefix);
    const lacking = scoredDevice('d1', 60, 'Moderate Risk', {
      missing: ['criticalCves', 'healthStatus'],
      missingReasons: { criticalCves: 'DEFENDER_NOT_FOUND', healthStatus: 'NOT_REPORTED' },
    });
    await scores.saveScores('t', cycle('c1', '2026-01-01T10:00:00.000Z'), [
      lacking,
      device('d2', 5, 'Trustworthy'),
    ]);
    // An entry stored before entries kept reasons: its signal is missing, and no reason is made up for it.
    const older = await storeHistoryWithoutReasons(redis, 't', 'd1');
    expect(await scores.history('t', 'd1')).toEqual([
      expect.objectContaining({
        cycleId: 'c1',
        missing: ['criticalCves', 'healthStatus'],
        missingReasons: { criticalCves: 'DEFENDER_NOT_FOUND', healthStatus: 'NOT_REPORTED' },
      }),
      { cycleId: 'c0', cycleStartedAt: '2026-01-01T09:50:00.000Z', ...older },
    ]);
    // A device missing nothing keeps no reasons at all.
    const [complete] = await scores.history('t', 'd2');
    expect(complete).toMatchObject({ cycleId: 'c1', missing: [] });
    expect(complete).not.toHaveProperty('missingReasons');
  });

  it("history should be the device's entries in the tenant's last cycles, and keep no hash of a dropped cycle", async () => {
    const scores = createScoreStore(redis.client, redis.prefix, { historyLength: 2 });
    const at = (minute: number) => cycle(`c${minute}`, `2026-01-01T10:0${minute}:00.000Z`);
    await scores.saveScores('t', at(1), [device('d1', 1, 'Trustworthy'), device('d2', 1, 'Trustworthy')]);
    // d2 is not listed in the second cycle: its history has a gap there.
    await scores.saveScores('t', at(2), [device('d1', 2, 'Trustworthy')]);
    await scores.saveScores('t', at(3), [device('d1', 3, 'Trustworthy'), device('d2', 3, 'Trustworthy')]);
    expect((await scores.history('t', 'd1')).map((s) => s.cycleId)).toEqual(['c3', 'c2']);
    expect((await scores.history('t', 'd2')).map((s) => s.cycleId)).toEqual(['c3']);
    // A late batch of a cycle older than the kept ones: d3 gets its score, but no history of that cycle.
    expect(await scores.saveScores('t', at(0), [device('d3', 9, 'Trustworthy')])).toEqual({
      written: 1,
      skipped: [],
    });
    expect(await scores.history('t', 'd3')).toEqual([]);
    const historyKeys = await redis.client.keys(`${redis.prefix}score-cycle-history:t:*`);
    expect(historyKeys.map((key) => key.slice(key.lastIndexOf(':') + 1)).sort()).toEqual(['c2', 'c3']);
    for (const key of historyKeys) expect(await redis.client.pttl(key)).toBeGreaterThan(0);
  });

  it('listDeviceScores should filter by band and page by device id', async () => {
    const scores = createScoreStore(redis.client, redis.prefix);
    await scores.saveScores('t', cycle('c1', '2026-01-01T10:00:00.000Z'), [
      device('b', 90, 'High Risk'),
      device('a', 85, 'High Risk'),
      device('c', 5, 'Trustworthy'),
    ]);
    const high = await scores.listDeviceScores('t', { band: 'High Risk' });
    expect(high.total).toBe(2);
    expect(high.items.map((s) => s.device.deviceId)).toEqual(['a', 'b']);
    const page = await scores.listDeviceScores('t', { limit: 1, offset: 1 });
    expect(page).toMatchObject({ total: 3, items: [{ device: { deviceId: 'b' } }] });
    expect(await scores.history('t', 'a')).toHaveLength(1);
    await scores.remove('t', ['a']);
    expect(await scores.getDeviceScore('t', 'a')).toBeNull();
    expect(await scores.history('t', 'a')).toEqual([]);
    expect((await scores.history('t', 'b')).map((s) => s.score)).toEqual([90]);
    expect((await scores.listDeviceScores('t')).total).toBe(2);
  });
});

describe('createPublishedStore', () => {
  const redis = testRedisPerTest();
  const lease = (tenantId: string) => ({ tenantId, holder: 'replica-1', ttlMs: 10_000 });
  /** A device published with score 10. */
  const d = (deviceId: string) => ({ deviceId, score: 10, band: 'Trustworthy' });

  it('changed should list only new devices and changed scores, never a stale one', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    const first = [
      { deviceId: 'd1', score: 10, band: 'Trustworthy' },
      { deviceId: 'd2', score: 50, band: 'Moderate Risk' },
    ];
    expect(await published.changed(lease('t'), 1000, first)).toEqual(first);
    await published.commit('t', 1000, first);
    const second = [
      { deviceId: 'd1', score: 10, band: 'Trustworthy' },
      { deviceId: 'd2', score: 55, band: 'Moderate Risk' },
    ];
    expect(await published.changed(lease('t'), 2000, second)).toEqual([second[1]]);
    await published.commit('t', 2000, second);
    expect(
      await published.changed(lease('t'), 1000, [{ deviceId: 'd2', score: 50, band: 'Moderate Risk' }]),
    ).toEqual([]);
    await published.commit('t', 1000, [{ deviceId: 'd2', score: 50, band: 'Moderate Risk' }]);
    expect(await published.get('t', 'd2')).toEqual({
      score: 55,
      band: 'Moderate Risk',
      digest: '',
      publishedCycleAt: 2000,
      seenCycleAt: 2000,
    });
    expect(await published.get('t', 'd1')).toEqual({
      score: 10,
      band: 'Trustworthy',
      digest: '',
      publishedCycleAt: 2000,
      seenCycleAt: 2000,
    });
  });

  it('changed should list a device whose digest changed with the same score, and read values kept before digests', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    const ref = (digest: string) => ({ deviceId: 'd1', score: 10, band: 'Trustworthy', digest });
    await published.commit('t', 1000, [ref('a1')]);
    expect(await published.changed(lease('t'), 2000, [ref('a1')])).toEqual([]);
    expect(await published.changed(lease('t'), 2000, [ref('b2')])).toEqual([ref('b2')]);
    await published.commit('t', 2000, [ref('b2')]);
    expect(await published.get('t', 'd1')).toMatchObject({ digest: 'b2', publishedCycleAt: 2000 });
    // An older batch leaves the newer digest.
    await published.commit('t', 1000, [ref('a1')]);
    expect(await published.get('t', 'd1')).toMatchObject({ digest: 'b2', publishedCycleAt: 2000 });
    // A value written before identities were kept: four fields, published again once.
    await redis.client.hset(`${redis.prefix}published:t`, 'd0', '10|Trustworthy|1000|1000');
    const old = { deviceId: 'd0', score: 10, band: 'Trustworthy', digest: 'c3' };
    expect(await published.get('t', 'd0')).toMatchObject({ score: 10, digest: '', seenCycleAt: 1000 });
    expect(await published.changed(lease('t'), 2000, [old])).toEqual([old]);
    await published.commit('t', 2000, [old]);
    expect(await redis.client.hget(`${redis.prefix}published:t`, 'd0')).toBe('10|Trustworthy|2000|2000|c3');
    await published.commit('t', 1000, [{ ...old, digest: 'x' }]);
    expect(await redis.client.hget(`${redis.prefix}published:t`, 'd0')).toBe('10|Trustworthy|2000|2000|c3');
  });

  it('commit should keep newest-wins and the seen cycle per device across a batch of several hundred', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    const refs = (score: number) =>
      Array.from({ length: 450 }, (_, i) => ({ deviceId: `d${i}`, score, band: 'Low Risk' }));
    // Every seventh device was published from a newer cycle already: its score stays, its seen cycle too.
    await published.commit(
      't',
      3000,
      refs(80).filter((_, i) => i % 7 === 0),
    );
    await published.commit('t', 2000, refs(20));
    for (const i of [0, 7, 203, 448, 449]) {
      const newer = i % 7 === 0;
      expect(await published.get('t', `d${i}`)).toEqual({
        score: newer ? 80 : 20,
        band: 'Low Risk',
        digest: '',
        publishedCycleAt: newer ? 3000 : 2000,
        seenCycleAt: newer ? 3000 : 2000,
      });
    }
    // A device a newer cycle recorded was seen since this one too.
    expect((await published.seenSince('t', 2000)).length).toBe(450);
    expect((await published.seenSince('t', 3000)).length).toBe(65);
    expect(await published.changed(lease('t'), 2000, refs(20))).toEqual([]);
  });

  it('changed and commit should skip a device tombstoned by a cycle as new as the batch, and take it back from a newer cycle', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    await published.commit('t', 1000, [d('gone'), d('stay')]);
    // Tombstoned when the cycle that started at 4000 completed (the device absent from it and the two before).
    await published.forget('t', ['gone'], 4000);
    // A batch of the cycle of 1000 delivered again, and a correction of it: not published, not recorded.
    expect(await published.changed(lease('t'), 1000, [d('gone'), { ...d('stay'), score: 11 }])).toEqual([
      { ...d('stay'), score: 11 },
    ]);
    expect(await published.changed(lease('t'), 1000, [d('gone')], { correction: true })).toEqual([]);
    await published.commit('t', 1000, [d('gone'), d('stay')]);
    await published.commit('t', 1000, [d('gone')], { correction: true });
    expect(await published.get('t', 'gone')).toBeNull();
    expect(await published.seenSince('t', 0)).toEqual(['stay']);
    // Listed again by a newer cycle: published and recorded.
    expect(await published.changed(lease('t'), 5000, [d('gone')])).toEqual([d('gone')]);
    await published.commit('t', 5000, [d('gone')]);
    expect(await published.get('t', 'gone')).toMatchObject({ publishedCycleAt: 5000, seenCycleAt: 5000 });
  });

  it("forget should keep a tombstoned device's marker for two days of cycles, and nothing for a deleted tenant's", async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    const markers = `${redis.prefix}published-tombstoned:t`;
    const day = 24 * 60 * 60 * 1000;
    await published.forget('t', ['old'], 1000);
    await published.forget('t', ['deleted']);
    await published.forget('t', ['new'], 1000 + 2 * day + 1);
    expect(await redis.client.zrange(markers, 0, -1)).toEqual(['new']);
    expect(await redis.client.pttl(markers)).toBeGreaterThan(day);
    expect(await published.changed(lease('t'), 1000, [d('old')])).toEqual([d('old')]);
  });

  it('completeCycle should number a cycle once and name devices absent from the last N completed cycles', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    const d = (deviceId: string) => ({ deviceId, score: 1, band: 'Trustworthy' });
    await published.commit('t', 1000, [d('stay'), d('leave')]);
    expect(await published.completeCycle('t', 'c1', 1000, 2)).toMatchObject({
      sequence: 1,
      gone: [],
      tombstones: 0,
      held: 0,
    });
    await published.commit('t', 2000, [d('stay')]);
    expect(await published.completeCycle('t', 'c2', 2000, 2)).toMatchObject({
      sequence: 2,
      gone: [],
      tombstones: 0,
      held: 0,
    });
    expect(await published.completeCycle('t', 'c2', 2000, 2)).toMatchObject({
      sequence: 2,
      gone: [],
      tombstones: 0,
      held: 0,
    });
    await published.commit('t', 3000, [d('stay')]);
    expect(await published.completeCycle('t', 'c3', 3000, 2)).toMatchObject({
      sequence: 3,
      gone: ['leave'],
      tombstones: 1,
      held: 0,
    });
    await published.forget('t', ['leave']);
    expect(await published.seenSince('t', 3000)).toEqual(['stay']);
    // Asked again once its tombstones went out: nothing left to tombstone, and still the count it had.
    expect(await published.completeCycle('t', 'c3', 3000, 2)).toMatchObject({
      sequence: 3,
      gone: [],
      tombstones: 1,
      held: 0,
    });
  });

  it("takeTenantLease should admit one replica per tenant, which a batch's changed takes and its recordBatch gives back", async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    const cycles = createCycleStore(redis.client, redis.prefix);
    const a = { tenantId: 't', holder: 'a', ttlMs: 30_000 };
    const b = { ...a, holder: 'b' };
    const ref = { deviceId: 'd1', score: 10, band: 'Trustworthy' };
    expect(await published.changed(a, 1000, [ref])).toEqual([ref]);
    // Another replica waits (nothing read); the holder takes it again; another tenant's lease is free.
    expect(await published.takeTenantLease(b)).toBe(false);
    expect(await published.changed(b, 1000, [ref])).toBeNull();
    expect(await published.takeTenantLease(a)).toBe(true);
    expect(await published.takeTenantLease({ ...b, tenantId: 'u' })).toBe(true);
    // Only its holder records the batch, giving it back in the same step: another records nothing.
    await expect(
      cycles.recordBatch('t', 'c1', 0, {}, b, { cycleAt: 1000, devices: [ref] }),
    ).rejects.toMatchObject({ code: 'TENANT_LEASE_LOST', canRetry: true });
    expect(await cycles.batchStats('t', 'c1')).toEqual(new Map());
    expect(await published.get('t', 'd1')).toBeNull();
    expect(await published.takeTenantLease(b)).toBe(false);
    expect(await cycles.recordBatch('t', 'c1', 0, {}, a, { cycleAt: 1000, devices: [ref] })).toMatchObject({
      first: true,
      scoredBatches: 1,
    });
    expect(await published.get('t', 'd1')).toMatchObject({ score: 10 });
    expect(await published.renewTenantLease(a)).toBe(false);
    expect(await published.takeTenantLease(b)).toBe(true);
    await published.releaseTenantLease(a);
    expect(await published.changed(a, 1000, [])).toBeNull();
    await published.releaseTenantLease(b);
    // A holder that died (a batch of no device, too) keeps it no longer than its lease.
    expect(await published.changed({ ...a, ttlMs: 5_000 }, 1000, [])).toEqual([]);
    expect(await published.takeTenantLease(b)).toBe(false);
    expect(await redis.client.pttl(redis.key('publish-lease:t'))).toBeGreaterThan(0);
    expect(await redis.client.pttl(redis.key('publish-lease:t'))).toBeLessThanOrEqual(5_000);
    await waitFor(() => published.takeTenantLease(b), { timeoutMs: 20_000, intervalMs: 250 });
  });

  it('takeRebuild should admit one rebuild at a time, and none once a rebuild set the marker', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    expect(await published.takeRebuild('one', 30_000)).toBe(true);
    expect(await published.takeRebuild('two', 30_000)).toBe(false);
    expect(await published.takeRebuild('one', 30_000)).toBe(true);
    expect(await published.markRebuilt('one', new Date())).toBe(true);
    // A replica that found the marker missing just before it was set does not read the topic again.
    expect(await published.takeRebuild('two', 30_000)).toBe(false);
    expect(await published.isRebuilt()).toBe(true);
    // Wiped again: rebuilt again.
    await redis.cleanup();
    expect(await published.takeRebuild('two', 30_000)).toBe(true);
  });

  it('markDeleted should list every device once, drop the deleted cycles until a registration, and an older deletion only what came before it', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    await markPublishedRebuilt(published);
    await published.commit('t', 1000, [d('a'), d('b')]);
    await published.completeCycle('t', 'c1', 1000, 3);
    expect((await published.markDeleted('t', 1500)).sort()).toEqual(['a', 'b']);
    await published.forget('t', ['a', 'b']);
    await published.forgetDeleted('t');
    // Delivered again: nothing left to tombstone.
    expect(await published.markDeleted('t', 1500)).toEqual([]);
    expect(await redis.client.exists(redis.key('published-cycles:t'), redis.key('published-seq:t'))).toBe(0);
    // Deleted, not registered again: every cycle of the tenant is a deleted tenant's, and takes no lease.
    expect(await published.ofDeletedTenant('t', 1000)).toBe(true);
    expect(await published.ofDeletedTenant('t', 1700)).toBe(true);
    expect(await published.changed(lease('t'), 1700, [d('a')])).toBe('deleted');
    expect(await published.takeTenantLease({ ...lease('t'), holder: 'replica-2' })).toBe(true);
    await published.releaseTenantLease({ ...lease('t'), holder: 'replica-2' });
    // Registered again at 2000: the cycles from then on are its own.
    await published.registeredAgain('t', 2000);
    expect(await published.ofDeletedTenant('t', 1700)).toBe(true);
    expect(await published.ofDeletedTenant('t', 2000)).toBe(false);
    // A later record of the tenant (a setting changed, its secret re-sealed) leaves its cycles its own.
    await published.registeredAgain('t', 2600);
    expect(await published.ofDeletedTenant('t', 2300)).toBe(false);
    expect(await published.changed(lease('t'), 2000, [d('c')])).toEqual([d('c')]);
    await published.commit('t', 2000, [d('c')]);
    // The deletion read again after the registration: the registered tenant's device stays.
    expect(await published.markDeleted('t', 1500)).toEqual([]);
    expect(await published.ofDeletedTenant('t', 2000)).toBe(false);
    expect(await published.get('t', 'c')).not.toBeNull();
    // A tenant never deleted: a registration records nothing.
    await published.registeredAgain('u', 2000);
    expect(await redis.client.exists(redis.key('published-deleted:u'))).toBe(0);
  });

  it('completeCycle with a hold should send the tombstones of most of a fleet only once they were absent for its cycles', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    const hold = { maxSharePercent: 50, minDevices: 1, cycles: 4 };
    await published.commit('t', 1000, ['a', 'b', 'c', 'stay'].map(d));
    expect(await published.completeCycle('t', 'c1', 1000, 2, hold)).toMatchObject({ gone: [], held: 0 });
    // From the second cycle on, the listing has only one of the four devices.
    const next = async (cycle: number) => {
      await published.commit('t', cycle * 1000, [d('stay')]);
      return published.completeCycle('t', `c${cycle}`, cycle * 1000, 2, hold);
    };
    expect(await next(2)).toEqual({
      first: true,
      sequence: 2,
      gone: [],
      tombstones: 0,
      held: 0,
      knownDevices: 4,
      snapshotSent: false,
    });
    // Absent from two cycles: three of four devices, more than half of them, are held.
    expect(await next(3)).toEqual({
      first: true,
      sequence: 3,
      gone: [],
      tombstones: 0,
      held: 3,
      knownDevices: 4,
      snapshotSent: false,
    });
    expect(await next(4)).toEqual({
      first: true,
      sequence: 4,
      gone: [],
      tombstones: 0,
      held: 3,
      knownDevices: 4,
      snapshotSent: false,
    });
    // Absent from four: sent.
    expect(await next(5)).toMatchObject({ sequence: 5, gone: ['a', 'b', 'c'], tombstones: 3, held: 0 });
  });

  it('completeCycle with a hold should hold on a repeat what its first call held, counting as it did, and hold no fewer devices than its least', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    const hold = { maxSharePercent: 50, minDevices: 3, cycles: 4 };
    await published.commit('t', 1000, ['a', 'b', 'c', 'stay'].map(d));
    await published.completeCycle('t', 'c1', 1000, 2, hold);
    for (const cycle of [2, 3]) await published.commit('t', cycle * 1000, [d('stay')]);
    await published.completeCycle('t', 'c2', 2000, 2, hold);
    const first = await published.completeCycle('t', 'c3', 3000, 2, hold);
    expect(first).toEqual({
      first: true,
      sequence: 3,
      gone: [],
      tombstones: 0,
      held: 3,
      knownDevices: 4,
      snapshotSent: false,
    });
    // Asked again (the summary sent again) after one held device was forgotten: still held, as first decided.
    await published.forget('t', ['a']);
    expect(await published.completeCycle('t', 'c3', 3000, 2, hold)).toEqual({
      first: false,
      sequence: 3,
      gone: [],
      tombstones: 0,
      held: 3,
      knownDevices: 3,
      snapshotSent: false,
    });
    // Fewer than minDevices absent: sent as without a hold, whatever their share.
    const small = { ...hold, minDevices: 3 };
    await published.commit('u', 1000, ['x', 'y', 'stay'].map(d));
    await published.completeCycle('u', 'c1', 1000, 2, small);
    for (const cycle of [2, 3]) await published.commit('u', cycle * 1000, [d('stay')]);
    await published.completeCycle('u', 'c2', 2000, 2, small);
    expect(await published.completeCycle('u', 'c3', 3000, 2, small)).toEqual({
      first: true,
      sequence: 3,
      gone: ['x', 'y'],
      tombstones: 2,
      held: 0,
      knownDevices: 3,
      snapshotSent: false,
    });
  });

  it('completeCycle asked again for a cycle that listed nothing should list nothing, however many devices the cycles after it lack', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    const hold = { maxSharePercent: 50, minDevices: 1, cycles: 4 };
    await published.commit('t', 1000, ['a', 'b', 'c', 'stay'].map(d));
    expect(await published.completeCycle('t', 'c1', 1000, 2, hold)).toMatchObject({
      gone: [],
      tombstones: 0,
    });
    // Then the listing answers one device of four: the hold keeps the others.
    for (const cycle of [2, 3]) {
      await published.commit('t', cycle * 1000, [d('stay')]);
      await published.completeCycle('t', `c${cycle}`, cycle * 1000, 2, hold);
    }
    // c1's summary sent again (its first send failed): what it tombstoned was decided at its completion.
    expect(await published.completeCycle('t', 'c1', 1000, 2, hold)).toMatchObject({
      sequence: 1,
      gone: [],
      tombstones: 0,
      held: 0,
    });
  });

  it('completeCycle asked again before its tombstones were sent should list them under the same hold', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    const hold = { maxSharePercent: 50, minDevices: 1, cycles: 4 };
    await published.commit('t', 1000, ['a', 'b', 'c', 'd'].map(d));
    await published.completeCycle('t', 'c1', 1000, 2, hold);
    for (const cycle of [2, 3]) await published.commit('t', cycle * 1000, ['b', 'c', 'd'].map(d));
    await published.completeCycle('t', 'c2', 2000, 2, hold);
    expect(await published.completeCycle('t', 'c3', 3000, 2, hold)).toMatchObject({
      gone: ['a'],
      tombstones: 1,
    });
    // Its tombstones not sent yet when the fleet's listing lost all but one device for two more cycles.
    for (const cycle of [4, 5]) {
      await published.commit('t', cycle * 1000, [d('d')]);
      await published.completeCycle('t', `c${cycle}`, cycle * 1000, 2, hold);
    }
    expect(await published.completeCycle('t', 'c3', 3000, 2, hold)).toMatchObject({
      gone: ['a'],
      tombstones: 1,
    });
  });

  it('markCycleSent should keep, with the completed cycle, that its tombstones and snapshot were sent, for its repeats', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    await published.commit('t', 1000, ['a', 'b'].map(d));
    await published.completeCycle('t', 'c1', 1000, 1);
    await published.commit('t', 2000, [d('b')]);
    expect(await published.completeCycle('t', 'c2', 2000, 1)).toMatchObject({
      gone: ['a'],
      snapshotSent: false,
    });
    await published.markCycleSent('t', 'c2', 'tombstones');
    await published.markCycleSent('t', 'c2', 'snapshot');
    // Not forgotten (say, a failure before it was): listed no more all the same.
    expect(await published.completeCycle('t', 'c2', 2000, 1)).toMatchObject({
      sequence: 2,
      gone: [],
      tombstones: 1,
      snapshotSent: true,
    });
    // A cycle not completed has nothing to mark.
    await published.markCycleSent('t', 'c9', 'snapshot');
    expect(await redis.client.hexists(`${redis.prefix}published-seq:t`, 'c9')).toBe(0);
  });

  it('deferOwedSummary should move an owed summary later by a delay doubling at each failure up to its cap, until it is sent', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin({
      tenantId: 't',
      cycleId: 'c1',
      startedAt: new Date(Date.now() - 60_000).toISOString(),
      deadlineAt: new Date(Date.now() + 60_000).toISOString(),
    });
    expect(await cycles.claimPublication('t', 'c1', 'partial', 1000)).toBe(true);
    const backoff = { firstMs: 100, maxMs: 300 };
    expect(await published.deferOwedSummary('t', 'c1', 'partial', 5000, backoff)).toBe(100);
    expect(await published.summariesOwed(5099)).toEqual([]);
    expect(await published.summariesOwed(5100)).toEqual([
      { tenantId: 't', cycleId: 'c1', status: 'partial' },
    ]);
    expect(await published.deferOwedSummary('t', 'c1', 'partial', 6000, backoff)).toBe(200);
    expect(await published.deferOwedSummary('t', 'c1', 'partial', 7000, backoff)).toBe(300);
    expect(await published.summariesOwed(7299)).toEqual([]);
    expect(await published.summariesOwed(7300)).toHaveLength(1);
    await published.summarySent('t', 'c1');
    expect(await published.summariesOwed(Number.MAX_SAFE_INTEGER)).toEqual([]);
    // Sent: neither listed again by a deferral nor left counting its failures.
    expect(await published.deferOwedSummary('t', 'c1', 'partial', 8000, backoff)).toBe(0);
    expect(await published.summariesOwed(Number.MAX_SAFE_INTEGER)).toEqual([]);
    expect(await redis.client.exists(`${redis.prefix}summaries-owed-failures`)).toBe(0);
  });

  it('completeCycle with a hold should send the tombstones of up to its share of the fleet at once', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    const hold = { maxSharePercent: 50, minDevices: 1, cycles: 4 };
    await published.commit('t', 1000, ['a', 'b', 'c', 'd'].map(d));
    await published.completeCycle('t', 'c1', 1000, 2, hold);
    for (const cycle of [2, 3]) await published.commit('t', cycle * 1000, ['c', 'd'].map(d));
    await published.completeCycle('t', 'c2', 2000, 2, hold);
    expect(await published.completeCycle('t', 'c3', 3000, 2, hold)).toMatchObject({
      sequence: 3,
      gone: ['a', 'b'],
      tombstones: 2,
      held: 0,
    });
  });

  it('completeCycle should keep the sequence numbers of the cycles it keeps only', async () => {
    const published = createPublishedStore(redis.client, redis.prefix);
    // Absence over 2 cycles: 2 + 10 completed cycles are kept, with their numbers.
    for (let cycle = 1; cycle <= 30; cycle++)
      expect((await published.completeCycle('t', `c${cycle}`, cycle * 1000, 2)).sequence).toBe(cycle);
    const numbered = await redis.client.hgetall(`${redis.prefix}published-seq:t`);
    expect(Object.keys(numbered).sort()).toEqual(Array.from({ length: 12 }, (_, i) => `c${19 + i}`).sort());
    expect(await published.completeCycle('t', 'c30', 30_000, 2)).toMatchObject({
      sequence: 30,
      gone: [],
      tombstones: 0,
      held: 0,
    });
  });
});

describe('createBulkVulnerabilityCache', () => {
  const redis = testRedisPerTest();
  /** The app an export was read with, its directory GUID in capitals; kept lowercased with the latest. */
  const app = { azureTenantId: '0A0A0A0A-0000-4000-8000-00000000000A', cloud: 'gcc' };
  const stored = { azureTenantId: '0a0a0a0a-0000-4000-8000-00000000000a', cloud: 'gcc' };

  it('renew should extend a claim its owner still holds, and only that', async () => {
    const cache = createBulkVulnerabilityCache(redis.client, redis.prefix);
    expect(await cache.claim('t', 'c1', 'a', 200)).toBe(true);
    expect(await cache.renew('t', 'c1', 'b', 10_000)).toBe(false);
    expect(await cache.renew('t', 'c1', 'a', 10_000)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Past the first 200 ms, still held: no second reader.
    expect(await cache.claim('t', 'c1', 'b', 10_000)).toBe(false);
    expect(await cache.state('t', 'c1')).toEqual({ state: 'pending', owner: 'a' });
    await cache.release('t', 'c1', 'a');
    expect(await cache.renew('t', 'c1', 'a', 10_000)).toBe(false);
  });

  it('claim should admit one fetcher at a time, release should hand it over, and read should serve the saved summaries', async () => {
    const cache = createBulkVulnerabilityCache(redis.client, redis.prefix);
    expect(await cache.claim('t', 'c1', 'a', 10_000)).toBe(true);
    expect(await cache.claim('t', 'c1', 'b', 10_000)).toBe(false);
    expect(await cache.state('t', 'c1')).toEqual({ state: 'pending', owner: 'a' });
    await cache.release('t', 'c1', 'b');
    expect(await cache.state('t', 'c1')).toEqual({ state: 'pending', owner: 'a' });
    await cache.release('t', 'c1', 'a');
    expect(await cache.claim('t', 'c1', 'b', 10_000)).toBe(true);
    const summary = {
      criticalCveCount: 1,
      totalCveCount: 2,
      maxCvss: 9.8,
      cvssThreshold: 9,
      topCveIds: ['CVE-1', 'CVE-2'],
    };
    await cache.save('t', 'c1', new Map([['d1', summary]]), '2026-01-01T10:00:00.000Z');
    expect(await cache.state('t', 'c1')).toEqual({ state: 'ready', collectedAt: '2026-01-01T10:00:00.000Z' });
    expect(await cache.claim('t', 'c1', 'b', 10_000)).toBe(false);
    expect(await cache.read('t', 'c1', ['d1', 'd2'])).toEqual(
      new Map([
        ['d1', summary],
        ['d2', undefined],
      ]),
    );
    await cache.fail('t', 'c2', { code: 'X', message: 'no' });
    expect(await cache.state('t', 'c2')).toEqual({ state: 'failed', code: 'X', message: 'no' });
    // An export that is not there (evicted, flushed, or not done) is no export whose devices are all absent.
    expect(await cache.read('t', 'c2', ['d1'])).toBeNull();
    await redis.client.del(`${redis.prefix}vuln-bulk:t:c1`);
    expect(await cache.read('t', 'c1', ['d1'])).toBeNull();
  });

  it("keepLatest should keep a done export as the tenant's latest past the cache's expiry, and let the one it replaces expire", async () => {
    const cache = createBulkVulnerabilityCache(redis.client, redis.prefix, 60_000);
    const summary = {
      criticalCveCount: 0,
      totalCveCount: 1,
      maxCvss: 5,
      cvssThreshold: 9,
      topCveIds: ['CVE-1'],
    };
    const day = 24 * 60 * 60 * 1000;
    expect(await cache.latest('t')).toBeNull();
    await cache.keepLatest('t', 'c0', { ...app, cvssThreshold: 9 }, day);
    expect(await cache.latest('t')).toBeNull();
    await cache.save('t', 'c1', new Map([['d1', summary]]), '2026-01-01T10:00:00.000Z');
    await cache.keepLatest('t', 'c1', { ...app, cvssThreshold: 9 }, day);
    expect(await cache.latest('t')).toEqual({
      cycleId: 'c1',
      collectedAt: '2026-01-01T10:00:00.000Z',
      cvssThreshold: 9,
      ...stored,
    });
    expect(await redis.client.pttl(`${redis.prefix}vuln-bulk:t:c1`)).toBeGreaterThan(60_000);
    await cache.save('t', 'c2', new Map([['d2', summary]]), '2026-01-01T10:10:00.000Z');
    await cache.keepLatest('t', 'c2', { ...app, cvssThreshold: 7.5 }, day);
    expect(await cache.latest('t')).toEqual({
      cycleId: 'c2',
      collectedAt: '2026-01-01T10:10:00.000Z',
      cvssThreshold: 7.5,
      ...stored,
    });
    expect(await redis.client.pttl(`${redis.prefix}vuln-bulk:t:c1`)).toBeLessThanOrEqual(60_000);
    // The one replaced may go sooner than the cache's expiry (the vuln-fetcher: after a poll interval).
    await cache.save('t', 'c3', new Map([['d3', summary]]), '2026-01-01T10:20:00.000Z');
    await cache.keepLatest('t', 'c3', { ...app, cvssThreshold: 7.5 }, day, 5_000);
    expect(await redis.client.pttl(`${redis.prefix}vuln-bulk:t:c2`)).toBeLessThanOrEqual(5_000);
    expect(await redis.client.pttl(`${redis.prefix}vuln-bulk:t:c3`)).toBeGreaterThan(60_000);
    // An older cycle's export (its last batch handled again) does not replace one read after it.
    await cache.keepLatest('t', 'c1', { ...app, cvssThreshold: 9 }, day, 5_000);
    expect(await cache.latest('t')).toMatchObject({ cycleId: 'c3', collectedAt: '2026-01-01T10:20:00.000Z' });
    expect(await redis.client.pttl(`${redis.prefix}vuln-bulk:t:c3`)).toBeGreaterThan(60_000);
    // An export that is gone (flushed, evicted) is no latest, even if its pointer is still there.
    await redis.client.del(`${redis.prefix}vuln-bulk:t:c3`);
    expect(await cache.latest('t')).toBeNull();
  });

  it("pinLatest should give every batch of a cycle the latest export its first batch took, kept while another cycle's replaces it", async () => {
    const cache = createBulkVulnerabilityCache(redis.client, redis.prefix, 60_000);
    const summary = { criticalCveCount: 0, totalCveCount: 0, maxCvss: null, cvssThreshold: 9, topCveIds: [] };
    const day = 24 * 60 * 60 * 1000;
    const exportKey = (cycleId: string) => `${redis.prefix}vuln-bulk:t:${cycleId}`;
    await cache.save('t', 'c1', new Map([['d1', summary]]), '2026-01-01T10:00:00.000Z');
    await cache.keepLatest('t', 'c1', { ...app, cvssThreshold: 9 }, day);
    const c1 = await cache.latest('t');
    expect(await cache.pinLatest('t', 'c3', null)).toBeNull();
    expect(await cache.pinLatest('t', 'c3', c1)).toEqual(c1);
    // c2's last batch, late, makes its export the latest: c3's batches still take c1.
    await cache.save('t', 'c2', new Map([['d1', summary]]), '2026-01-01T10:10:00.000Z');
    await cache.keepLatest('t', 'c2', { ...app, cvssThreshold: 9 }, day, 5_000);
    const c2 = await cache.latest('t');
    expect(c2?.cycleId).toBe('c2');
    expect(await cache.pinLatest('t', 'c3', c2)).toEqual(c1);
    expect(await cache.pinLatest('t', 'c3', null)).toEqual(c1);
    // Pinned by c3, c1 is not let go 5 s after c2 replaced it.
    expect(await redis.client.pttl(exportKey('c1'))).toBeGreaterThan(5_000);
    // c4 pins c2; c4's own export replacing it may let it go soon, no other cycle needing it.
    expect(await cache.pinLatest('t', 'c4', c2)).toEqual(c2);
    await cache.save('t', 'c4', new Map([['d1', summary]]), '2026-01-01T10:30:00.000Z');
    await cache.keepLatest('t', 'c4', { ...app, cvssThreshold: 9 }, day, 5_000);
    expect(await redis.client.pttl(exportKey('c2'))).toBeLessThanOrEqual(5_000);
    // A pinned export that is gone is named as gone: batches of c3 were enriched from it.
    await redis.client.del(exportKey('c1'));
    expect(await cache.pinLatest('t', 'c3', null)).toEqual({ ...c1, gone: true });
  });

  it('pinLatest should pin the latest export and keep it, and its cycle among those that pinned it, in one round trip', async () => {
    const cache = createBulkVulnerabilityCache(redis.client, redis.prefix, 60_000);
    const summary = { criticalCveCount: 0, totalCveCount: 0, maxCvss: null, cvssThreshold: 9, topCveIds: [] };
    await cache.save('t', 'c1', new Map([['d1', summary]]), '2026-01-01T10:00:00.000Z');
    await cache.keepLatest('t', 'c1', { ...app, cvssThreshold: 9 }, 1_000);
    const c1 = await cache.latest('t');
    const commands = jest.spyOn(redis.client, 'sendCommand');
    try {
      expect(await cache.pinLatest('t', 'c2', c1)).toEqual(c1);
      expect(commands).toHaveBeenCalledTimes(1);
    } finally {
      commands.mockRestore();
    }
    expect(await redis.client.smembers(`${redis.prefix}vuln-bulk-pinned:t:c1`)).toEqual(['c2']);
    expect(await redis.client.pttl(`${redis.prefix}vuln-bulk-pinned:t:c1`)).toBeGreaterThan(1_000);
    // Kept as long as the pin, past the 1 s it was kept as the latest for.
    expect(await redis.client.pttl(`${redis.prefix}vuln-bulk:t:c1`)).toBeGreaterThan(1_000);
    expect(await redis.client.pttl(`${redis.prefix}vuln-bulk-pin:t:c2`)).toBeGreaterThan(1_000);
  });

  it('keepLatest should let an export go once the cycles that pinned it are done, and pinLatest renew the pin', async () => {
    const cache = createBulkVulnerabilityCache(redis.client, redis.prefix, 60_000);
    const summary = { criticalCveCount: 0, totalCveCount: 0, maxCvss: null, cvssThreshold: 9, topCveIds: [] };
    const day = 24 * 60 * 60 * 1000;
    const exportKey = (cycleId: string) => `${redis.prefix}vuln-bulk:t:${cycleId}`;
    const of = { ...app, cvssThreshold: 9 };
    await cache.save('t', 'c1', new Map([['d1', summary]]), '2026-01-01T10:00:00.000Z');
    await cache.keepLatest('t', 'c1', of, day);
    const c1 = await cache.latest('t');
    // c2 and c3 pin c1 and find the snapshot unchanged: each keeps c1 as the latest, and is done with it.
    for (const cycleId of ['c2', 'c3']) {
      expect(await cache.pinLatest('t', cycleId, c1)).toEqual(c1);
      await cache.keepLatest('t', 'c1', of, day, 5_000, cycleId);
    }
    // The pin is renewed by each batch that takes it.
    await redis.client.pexpire(`${redis.prefix}vuln-bulk-pin:t:c4`, 1_000);
    expect(await cache.pinLatest('t', 'c4', c1)).toEqual(c1);
    await redis.client.pexpire(`${redis.prefix}vuln-bulk-pin:t:c4`, 1_000);
    expect(await cache.pinLatest('t', 'c4', null)).toEqual(c1);
    expect(await redis.client.pttl(`${redis.prefix}vuln-bulk-pin:t:c4`)).toBeGreaterThan(1_000);
    // c4 reads its own export: c1, pinned by no cycle still running, goes after one interval.
    await cache.save('t', 'c4', new Map([['d1', summary]]), '2026-01-01T10:30:00.000Z');
    await cache.keepLatest('t', 'c4', of, day, 5_000);
    expect(await redis.client.pttl(exportKey('c1'))).toBeLessThanOrEqual(5_000);
    // c6 pins c4; c5's last batch, late, replaces c4, kept while c6 runs. c6's own export goes after it: c4,
    // no longer the latest and pinned by no cycle, goes after one interval too.
    expect(await cache.pinLatest('t', 'c6', await cache.latest('t'))).toMatchObject({ cycleId: 'c4' });
    await cache.save('t', 'c5', new Map([['d1', summary]]), '2026-01-01T10:40:00.000Z');
    await cache.keepLatest('t', 'c5', of, day, 5_000);
    expect(await redis.client.pttl(exportKey('c4'))).toBeGreaterThan(5_000);
    await cache.save('t', 'c6', new Map([['d1', summary]]), '2026-01-01T10:50:00.000Z');
    await cache.keepLatest('t', 'c6', of, day, 5_000);
    expect(await redis.client.pttl(exportKey('c5'))).toBeLessThanOrEqual(5_000);
    expect(await redis.client.pttl(exportKey('c4'))).toBeLessThanOrEqual(5_000);
    expect((await cache.latest('t'))?.cycleId).toBe('c6');
  });

  it("save should keep the snapshot's generatedTime with the export, keepLatest carry it to the latest, and renew the latest it names", async () => {
    const cache = createBulkVulnerabilityCache(redis.client, redis.prefix, 60_000);
    const summary = {
      criticalCveCount: 1,
      totalCveCount: 1,
      maxCvss: 9.8,
      cvssThreshold: 9,
      topCveIds: ['CVE-1'],
    };
    const day = 24 * 60 * 60 * 1000;
    await cache.save(
      't',
      'c1',
      new Map([['d1', summary]]),
      '2026-01-01T10:00:00.000Z',
      '2026-01-01T06:00:00Z',
    );
    // The cycle's batches read it with the export too: a device first seen after it is not in it.
    expect(await cache.state('t', 'c1')).toEqual({
      state: 'ready',
      collectedAt: '2026-01-01T10:00:00.000Z',
      generatedTime: '2026-01-01T06:00:00Z',
    });
    await cache.keepLatest('t', 'c1', { ...app, cvssThreshold: 9 }, day);
    expect(await cache.latest('t')).toEqual({
      cycleId: 'c1',
      collectedAt: '2026-01-01T10:00:00.000Z',
      cvssThreshold: 9,
      generatedTime: '2026-01-01T06:00:00Z',
      ...stored,
    });
    // The marker is no device: a scan leaves it out, and a compare naming every device scans for none gone.
    const scanned: [string, string][] = [];
    for await (const part of cache.scan('t', 'c1')) scanned.push(...part);
    expect(scanned).toEqual([['d1', JSON.stringify(summary)]]);
    const scans = jest.spyOn(redis.client, 'hscanStream');
    try {
      const changed: [string, string | null][] = [];
      for await (const part of cache.compare('t', 'c1', [[['d1', JSON.stringify(summary)]]]))
        changed.push(...part);
      expect(changed).toEqual([]);
      expect(scans).not.toHaveBeenCalled();
    } finally {
      scans.mockRestore();
    }
    // The latest kept again under its own cycle (a cycle that found the snapshot unchanged) lives on.
    await redis.client.pexpire(`${redis.prefix}vuln-bulk-latest:t`, 1_000);
    await redis.client.pexpire(`${redis.prefix}vuln-bulk:t:c1`, 1_000);
    await cache.keepLatest('t', 'c1', { ...app, cvssThreshold: 9 }, day, 5_000);
    expect(await redis.client.pttl(`${redis.prefix}vuln-bulk-latest:t`)).toBeGreaterThan(60_000);
    expect(await redis.client.pttl(`${redis.prefix}vuln-bulk:t:c1`)).toBeGreaterThan(60_000);
    expect((await cache.latest('t'))?.generatedTime).toBe('2026-01-01T06:00:00Z');
    // An export saved without one (its snapshot was not known) has none.
    await cache.save('t', 'c2', new Map([['d1', summary]]), '2026-01-01T10:10:00.000Z');
    await cache.keepLatest('t', 'c2', { ...app, cvssThreshold: 9 }, day);
    expect(await cache.latest('t')).toEqual({
      cycleId: 'c2',
      collectedAt: '2026-01-01T10:10:00.000Z',
      cvssThreshold: 9,
      ...stored,
    });
  });

  it('compare should name the new, changed and gone summaries of an export against the stored one, in slices', async () => {
    const cache = createBulkVulnerabilityCache(redis.client, redis.prefix);
    const summaryOf = (critical: number) => ({
      criticalCveCount: critical,
      totalCveCount: critical + 1,
      maxCvss: 9.8,
      cvssThreshold: 9,
      topCveIds: ['CVE-1'],
    });
    const before = new Map<string, ReturnType<typeof summaryOf>>();
    const after = new Map<string, ReturnType<typeof summaryOf>>();
    for (let i = 0; i < 3_000; i++) {
      if (i % 10 !== 0) before.set(`d${i}`, summaryOf(i % 4));
      // Every 10th device is new, every 7th changed, every 13th gone; the rest as before.
      if (i % 13 !== 0) after.set(`d${i}`, summaryOf(i % 7 === 0 ? 9 : i % 4));
    }
    await cache.save('t', 'c1', before, '2026-01-01T10:00:00.000Z');
    await cache.save('t', 'c2', after, '2026-01-01T10:10:00.000Z');
    const expected = new Map<string, string | null>();
    for (const [id, summary] of after)
      if (JSON.stringify(before.get(id)) !== JSON.stringify(summary))
        expected.set(id, JSON.stringify(summary));
    for (const id of before.keys()) if (!after.has(id)) expected.set(id, null);
    const found = new Map<string, string | null>();
    let slices = 0;
    for await (const slice of cache.compare('t', 'c1', cache.scan('t', 'c2', 200))) {
      slices++;
      for (const [id, json] of slice) {
        expect(found.has(id)).toBe(false);
        found.set(id, json);
      }
    }
    expect(found).toEqual(expected);
    expect(expected.size).toBeGreaterThan(500);
    expect(slices).toBeGreaterThan(2);
    for await (const slice of cache.compare('t', 'c2', cache.scan('t', 'c2'))) expect(slice).toEqual([]);
    // Slices made in memory compare the same way: the JSON as `save` stores it.
    const inMemory = [...after].map(([id, summary]): [string, string] => [id, JSON.stringify(summary)]);
    const fromMemory = new Map<string, string | null>();
    for await (const slice of cache.compare('t', 'c1', [inMemory.slice(0, 1000), inMemory.slice(1000)]))
      for (const [id, json] of slice) fromMemory.set(id, json);
    expect(fromMemory).toEqual(expected);
  });

  it('compare should not scan the stored export for gone devices when every one of them was named', async () => {
    const cache = createBulkVulnerabilityCache(redis.client, redis.prefix);
    const summaryOf = (critical: number) => ({
      criticalCveCount: critical,
      totalCveCount: critical,
      maxCvss: null,
      cvssThreshold: 9,
      topCveIds: [],
    });
    const before = new Map([
      ['d1', summaryOf(1)],
      ['d2', summaryOf(2)],
    ]);
    await cache.save('t', 'c1', before, '2026-01-01T10:00:00.000Z');
    const scans = jest.spyOn(redis.client, 'hscanStream');
    const compared = async (after: [string, ReturnType<typeof summaryOf>][]) => {
      const found: [string, string | null][] = [];
      const slices = [after.map(([id, summary]): [string, string] => [id, JSON.stringify(summary)])];
      for await (const slice of cache.compare('t', 'c1', slices)) found.push(...slice);
      return found;
    };
    try {
      // The same export, and one with a device changed and one new: nothing gone, no scan.
      expect(await compared([...before])).toEqual([]);
      expect(
        await compared([
          ['d1', summaryOf(1)],
          ['d2', summaryOf(5)],
          ['d3', summaryOf(3)],
        ]),
      ).toEqual([
        ['d2', JSON.stringify(summaryOf(5))],
        ['d3', JSON.stringify(summaryOf(3))],
      ]);
      expect(scans).not.toHaveBeenCalled();
      // A device gone (d1), with as many named as stored: the scan finds it.
      expect(
        await compared([
          ['d2', summaryOf(2)],
          ['d3', summaryOf(3)],
        ]),
      ).toEqual([
        ['d3', JSON.stringify(summaryOf(3))],
        ['d1', null],
      ]);
      expect(scans).toHaveBeenCalledTimes(1);
    } finally {
      scans.mockRestore();
    }
  });

  it('save should write a large export in slices, each as it is produced, and mark it ready only at the end', async () => {
    const cache = createBulkVulnerabilityCache(redis.client, redis.prefix);
    const key = `${redis.prefix}vuln-bulk:t:c1`;
    const summaryOf = (index: number) => ({
      criticalCveCount: index % 3,
      totalCveCount: index % 5,
      maxCvss: index % 2 ? 9.1 : null,
      cvssThreshold: 7,
      topCveIds: [`CVE-2026-${index}`],
    });
    function* summaries(count: number, failAt?: number): Generator<[string, ReturnType<typeof summaryOf>]> {
      for (let index = 0; index < count; index++) {
        if (index === failAt) throw new Error('stopped');
        yield [`d${index}`, summaryOf(index)];
      }
    }
    // Cut short after 1,500 devices: the first slice of 1,000 is written, with an expiry, but not ready.
    await expect(cache.save('t', 'c1', summaries(2_500, 1_500), 'never')).rejects.toThrow('stopped');
    expect(await redis.client.hlen(key)).toBe(1_000);
    expect(await redis.client.pttl(key)).toBeGreaterThan(0);
    expect(await cache.state('t', 'c1')).toEqual({ state: 'absent' });

    await cache.save('t', 'c1', summaries(2_500), '2026-01-01T10:00:00.000Z');
    expect(await cache.state('t', 'c1')).toEqual({ state: 'ready', collectedAt: '2026-01-01T10:00:00.000Z' });
    const ids = Array.from({ length: 2_500 }, (_, index) => `d${index}`);
    const read = await cache.read('t', 'c1', [...ids, 'absent']);
    ids.forEach((id, index) => expect(read?.get(id)).toEqual(summaryOf(index)));
    expect(read?.has('absent')).toBe(true);
    expect(read?.get('absent')).toBeUndefined();
  });
});
