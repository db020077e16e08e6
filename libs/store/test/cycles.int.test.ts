import { createCycleStore, createPublishedStore, createTenantStore, recordLostBatches } from '@urs/store';
import { testRedisPerTest, waitFor } from '@urs/testkit';

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
    expect(await cycles.recordBatch('acme', 'c1', 0, { devices: 500 })).toMatchObject({
      first: true,
      scoredBatches: 1,
    });
    expect(await cycles.recordBatch('acme', 'c1', 0, { devices: 500 })).toMatchObject({
      first: false,
      scoredBatches: 1,
    });
    expect(await cycles.recordBatch('acme', 'c1', 1, { devices: 12 })).toMatchObject({
      first: true,
      scoredBatches: 2,
    });
    const stats = await cycles.batchStats<{ devices: number }>('acme', 'c1');
    expect([...stats.entries()].sort()).toEqual([
      [0, { devices: 500 }],
      [1, { devices: 12 }],
    ]);
  });

  it("addCorrections should add a bulk cycle's correction batches to its total, once, and only on a begun cycle", async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.addCorrections('acme', 'never-begun', 2);
    expect(await redis.client.exists(`${redis.prefix}cycle:acme:never-begun`)).toBe(0);
    await cycles.begin(begin);
    await cycles.addCorrections('acme', 'c1', 2);
    expect((await cycles.get('acme', 'c1'))?.totalBatches).toBeUndefined();
    await cycles.listed('acme', 'c1', { totalBatches: 3, totalDevices: 1200, listedAt: begin.startedAt });
    await cycles.addCorrections('acme', 'c1', 2);
    expect(await cycles.get('acme', 'c1')).toMatchObject({ totalBatches: 5, totalDevices: 1200 });
  });

  it("addCorrections should never lower a cycle's correction batches, and answer the count the cycle holds", async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    expect(await cycles.addCorrections('acme', 'never-begun', 2)).toBe(2);
    await cycles.begin(begin);
    expect(await cycles.addCorrections('acme', 'c1', 0)).toBe(0);
    expect(await redis.client.hexists(`${redis.prefix}cycle:acme:c1`, 'correctionBatches')).toBe(0);
    expect(await cycles.addCorrections('acme', 'c1', 3)).toBe(3);
    // A later try of the last batch, from a newer export, makes fewer (or none): the count stays.
    expect(await cycles.addCorrections('acme', 'c1', 2)).toBe(3);
    expect(await cycles.addCorrections('acme', 'c1', 0)).toBe(3);
    await cycles.listed('acme', 'c1', { totalBatches: 3, totalDevices: 1200, listedAt: begin.startedAt });
    expect(await cycles.get('acme', 'c1')).toMatchObject({ totalBatches: 6, correctionBatches: 3 });
    expect(await cycles.addCorrections('acme', 'c1', 4)).toBe(4);
    expect((await cycles.get('acme', 'c1'))?.totalBatches).toBe(7);
  });

  it('listingPending should keep the totals of a begun cycle not yet listed, until listed drops them', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const totals = {
      totalBatches: 3,
      totalDevices: 1200,
      listedAt: begin.startedAt,
      vulnerabilityMode: 'bulk' as const,
      note: null,
    };
    const lease = { tenantId: 'acme', token: '1:poller-a' };
    await redis.client.set(`${redis.prefix}poll-lease:acme`, lease.token);
    await cycles.listingPending(lease, 'never-begun', totals);
    expect(await redis.client.exists(`${redis.prefix}cycle:acme:never-begun`)).toBe(0);
    await cycles.begin(begin);
    expect(await cycles.listingPending(lease, 'c1', totals)).toBe(true);
    const pending = await cycles.get('acme', 'c1');
    expect(pending?.pendingListing).toEqual(totals);
    expect(pending?.listedAt).toBeUndefined();
    await cycles.listed('acme', 'c1', { ...totals, totalDevices: 1201 });
    const listed = await cycles.get('acme', 'c1');
    expect(listed).toMatchObject({ totalBatches: 3, totalDevices: 1201 });
    expect(listed?.pendingListing).toBeUndefined();
    // Listed already: nothing kept as pending again.
    await cycles.listingPending(lease, 'c1', totals);
    expect((await cycles.get('acme', 'c1'))?.pendingListing).toBeUndefined();
  });

  it("listingPending should write nothing once the tenant's poll lease is not the given one, and dropPendingListing drop the kept totals", async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const totals = { totalBatches: 3, totalDevices: 1200, listedAt: begin.startedAt };
    await cycles.begin(begin);
    const lease = { tenantId: 'acme', token: '1:poller-a' };
    // Its lease lapsed (a write the client queued while Redis was away lands late), or another poller's since.
    expect(await cycles.listingPending(lease, 'c1', totals)).toBe(false);
    await redis.client.set(`${redis.prefix}poll-lease:acme`, '2:poller-b');
    expect(await cycles.listingPending(lease, 'c1', totals)).toBe(false);
    expect((await cycles.get('acme', 'c1'))?.pendingListing).toBeUndefined();
    await redis.client.set(`${redis.prefix}poll-lease:acme`, lease.token);
    expect(await cycles.listingPending(lease, 'c1', totals)).toBe(true);
    expect((await cycles.get('acme', 'c1'))?.pendingListing).toEqual(totals);
    await cycles.dropPendingListing('acme', 'c1');
    expect((await cycles.get('acme', 'c1'))?.pendingListing).toBeUndefined();
  });

  it('enriched should count each enriched batch of a cycle once', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    expect(await cycles.enrichedOrLostBatches('acme', 'c1', 10)).toBe(0);
    await cycles.enriched('acme', 'c1', 0);
    await cycles.enriched('acme', 'c1', 2);
    await cycles.enriched('acme', 'c1', 0);
    await cycles.enriched('acme', 'c2', 1);
    expect(await cycles.enrichedOrLostBatches('acme', 'c1', 10)).toBe(2);
    expect(await redis.client.pttl(`${redis.prefix}cycle-enriched:acme:c1`)).toBeGreaterThan(0);
  });

  it('claimBatch should answer enriched only for a batch recorded as enriched, of its own cycle', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const claim = (tenantId: string, cycleId: string, batchIndex: number) =>
      cycles.claimBatch(tenantId, cycleId, batchIndex, 'h1', 60_000);
    await cycles.enriched('acme', 'c1', 0);
    await cycles.enriched('acme', 'c2', 1);
    expect(await claim('acme', 'c1', 0)).toBe('enriched');
    expect(await claim('acme', 'c1', 1)).toBe('claimed');
    expect(await claim('acme', 'c2', 0)).toBe('claimed');
    expect(await claim('other', 'c1', 0)).toBe('claimed');
  });

  it('claimBatch should give a batch to one holder at a time, until it is given back or lapses', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    expect(await cycles.claimBatch('acme', 'c1', 0, 'a', 60_000)).toBe('claimed');
    expect(await cycles.claimBatch('acme', 'c1', 0, 'b', 60_000)).toBe('held');
    // Its holder takes it again; other batches, cycles and tenants are claimed on their own.
    expect(await cycles.claimBatch('acme', 'c1', 0, 'a', 60_000)).toBe('claimed');
    expect(await cycles.claimBatch('acme', 'c1', 1, 'b', 60_000)).toBe('claimed');
    expect(await cycles.claimBatch('acme', 'c2', 0, 'b', 60_000)).toBe('claimed');
    expect(await cycles.claimBatch('other', 'c1', 0, 'b', 60_000)).toBe('claimed');
    // Only its holder gives it back.
    await cycles.releaseBatchClaim('acme', 'c1', 0, 'b');
    expect(await cycles.claimBatch('acme', 'c1', 0, 'b', 60_000)).toBe('held');
    await cycles.releaseBatchClaim('acme', 'c1', 0, 'a');
    expect(await cycles.claimBatch('acme', 'c1', 0, 'b', 60_000)).toBe('claimed');
    // A claim not renewed lapses and goes to the next holder, whose claim its first holder cannot renew.
    expect(await cycles.claimBatch('acme', 'c3', 0, 'a', 50)).toBe('claimed');
    await waitFor(async () => (await cycles.claimBatch('acme', 'c3', 0, 'b', 60_000)) === 'claimed');
    expect(await cycles.renewBatchClaim('acme', 'c3', 0, 'a', 60_000)).toBe(false);
    expect(await cycles.renewBatchClaim('acme', 'c3', 0, 'b', 60_000)).toBe(true);
    expect(await redis.client.pttl(`${redis.prefix}cycle-batch-claim:acme:c3:0`)).toBeGreaterThan(50_000);
  });

  it('claimBatch should answer enriched, and leave no claim, for a batch recorded as enriched', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    expect(await cycles.claimBatch('acme', 'c1', 0, 'a', 60_000)).toBe('claimed');
    await cycles.enriched('acme', 'c1', 0);
    await cycles.releaseBatchClaim('acme', 'c1', 0, 'a');
    expect(await cycles.claimBatch('acme', 'c1', 0, 'b', 60_000)).toBe('enriched');
    // Recorded while another holder still held it (its release not yet done): enriched too.
    expect(await cycles.claimBatch('acme', 'c1', 1, 'a', 60_000)).toBe('claimed');
    await cycles.enriched('acme', 'c1', 1);
    expect(await cycles.claimBatch('acme', 'c1', 1, 'b', 60_000)).toBe('enriched');
    expect(await cycles.claimBatch('acme', 'c1', 1, 'a', 60_000)).toBe('enriched');
    expect(await redis.client.exists(`${redis.prefix}cycle-batch-claim:acme:c1:0`)).toBe(0);
    expect(await redis.client.exists(`${redis.prefix}cycle-batch-claim:acme:c1:1`)).toBe(0);
  });

  it('enriched should keep the devices each batch sent as not in its snapshot, with their firstSeen', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    expect(await cycles.notInSnapshot('acme', 'c1')).toEqual([]);
    await cycles.enriched('acme', 'c1', 0, [['d1', '2026-01-01T07:00:00.000Z']]);
    await cycles.enriched('acme', 'c1', 1, []);
    await cycles.enriched('acme', 'c1', 2, [['d5', '2026-01-01T08:00:00.000Z']]);
    await cycles.enriched('acme', 'c1', 0, [['d1', '2026-01-01T07:00:00.000Z']]);
    await cycles.enriched('acme', 'c2', 0, [['d9', '2026-01-01T09:00:00.000Z']]);
    expect(await cycles.enrichedOrLostBatches('acme', 'c1', 10)).toBe(3);
    expect((await cycles.notInSnapshot('acme', 'c1')).sort()).toEqual([
      ['d1', '2026-01-01T07:00:00.000Z'],
      ['d5', '2026-01-01T08:00:00.000Z'],
    ]);
    expect(await redis.client.pttl(`${redis.prefix}cycle-not-in-snapshot:acme:c1`)).toBeGreaterThan(0);
  });

  it('recordBatch should answer the cycle as get does after it, totals and claim included', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    const early = await cycles.recordBatch('acme', 'c1', 0, { devices: 500 });
    expect(early.state).toEqual(await cycles.get('acme', 'c1'));
    expect(early.state).toMatchObject({ startedAt: begin.startedAt, scoredBatches: 1 });
    expect(early.state?.totalBatches).toBeUndefined();
    await cycles.listed('acme', 'c1', { totalBatches: 2, totalDevices: 512, listedAt: begin.startedAt });
    await cycles.claimPublication('acme', 'c1', 'partial', startedMs);
    const late = await cycles.recordBatch('acme', 'c1', 1, { devices: 12 });
    expect(late.state).toEqual(await cycles.get('acme', 'c1'));
    expect(late.state).toMatchObject({
      totalBatches: 2,
      totalDevices: 512,
      scoredBatches: 2,
      published: 'partial',
    });
    // A batch of a cycle the poller never began (or that expired) records, with no cycle to answer.
    expect(await cycles.recordBatch('acme', 'gone', 0, { devices: 1 })).toEqual({
      first: true,
      scoredBatches: 1,
      state: null,
    });
  });

  it("recordBatch should commit the batch's devices as published in the same step", async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const published = createPublishedStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    const devices = [{ deviceId: 'd1', score: 10, band: 'Trustworthy' }];
    await cycles.recordBatch('acme', 'c1', 0, { devices: 1 }, undefined, { cycleAt: startedMs, devices });
    expect(await published.seenSince('acme', startedMs)).toEqual(['d1']);
    const lease = { tenantId: 'acme', holder: 'r1', ttlMs: 10_000 };
    expect(await published.changed(lease, startedMs, devices)).toEqual([]);
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

  it('get should show the vulnerability mode and note the poller listed the cycle with', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    await cycles.begin({ ...begin, cycleId: 'c2' });
    const listedAt = new Date().toISOString();
    const note = 'bulk vulnerability export: 30000 devices exceed the 400 per-device calls';
    await cycles.listed('acme', 'c1', {
      totalBatches: 60,
      totalDevices: 30_000,
      listedAt,
      vulnerabilityMode: 'bulk',
      note,
    });
    await cycles.listed('acme', 'c2', {
      totalBatches: 1,
      totalDevices: 12,
      listedAt,
      vulnerabilityMode: 'per-device',
      note: null,
    });
    expect(await cycles.get('acme', 'c1')).toMatchObject({ listedAt, vulnerabilityMode: 'bulk', note });
    const perDevice = await cycles.get('acme', 'c2');
    expect(perDevice).toMatchObject({ totalDevices: 12, vulnerabilityMode: 'per-device' });
    expect(perDevice?.note).toBeUndefined();
  });

  it("begin should keep the tenant's last listed device count, for a cycle whose own total is never known", async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const tenants = createTenantStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    expect((await cycles.get('acme', 'c1'))?.lastKnownDevices).toBeUndefined();
    await tenants.updateStatus('acme', { deviceCount: 740 });
    await cycles.begin({ ...begin, cycleId: 'c2' });
    expect(await cycles.get('acme', 'c2')).toMatchObject({ lastKnownDevices: 740 });
  });

  it('abandon should record what a stopped listing emitted and bring its close forward, at once when every emitted batch is in', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    await cycles.begin({ ...begin, cycleId: 'c2' });
    await cycles.recordBatch('acme', 'c1', 0, { devices: 500 });
    const at = new Date(startedMs + 60_000);
    const abandonment = { batches: 1, devices: 730, code: 'DEFENDER_UNAVAILABLE', at: at.toISOString() };
    expect(await cycles.abandon('acme', 'c1', abandonment, startedMs + 120_000)).toBe(true);
    expect(await cycles.get('acme', 'c1')).toMatchObject({ abandoned: abandonment });
    // Its only emitted batch is in: due now, not at the grace's end.
    expect(await cycles.overdue(at)).toEqual([{ tenantId: 'acme', cycleId: 'c1' }]);
    // A batch still on its way: due when the grace ends, or when that batch completes it.
    expect(await cycles.abandon('acme', 'c2', { ...abandonment, batches: 2 }, startedMs + 120_000)).toBe(
      true,
    );
    expect(await cycles.overdue(new Date(startedMs + 119_999))).toEqual([
      { tenantId: 'acme', cycleId: 'c1' },
    ]);
    expect(await cycles.overdue(new Date(startedMs + 120_000))).toHaveLength(2);
  });

  it("abandon should close a cycle whose emitted batches are not known at closeAt only, and let its poller's own count replace it, never the reverse", async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    await cycles.begin({ ...begin, cycleId: 'c2' });
    const at = new Date(startedMs + 60_000);
    const gone = { code: 'POLLER_GONE', at: at.toISOString() };
    // No batch in yet: with the batches not known, that does not make it due at once.
    expect(await cycles.abandon('acme', 'c1', gone, startedMs + 120_000)).toBe(true);
    expect((await cycles.get('acme', 'c1'))?.abandoned).toEqual(gone);
    expect(await cycles.overdue(at)).toEqual([]);
    expect(await cycles.overdue(new Date(startedMs + 120_000))).toEqual([
      { tenantId: 'acme', cycleId: 'c1' },
    ]);
    // Its poller, alive after all, tells how far it got: its count is kept, the earlier close too.
    const own = { batches: 0, devices: 12, code: 'CYCLE_ABORTED', at: at.toISOString() };
    expect(await cycles.abandon('acme', 'c1', own, startedMs + 180_000)).toBe(true);
    expect((await cycles.get('acme', 'c1'))?.abandoned).toEqual(own);
    expect(await cycles.overdue(at)).toEqual([{ tenantId: 'acme', cycleId: 'c1' }]);
    // Recorded by its poller first: a poller taking the tenant over changes nothing.
    expect(await cycles.abandon('acme', 'c2', { ...own, batches: 3 }, startedMs + 180_000)).toBe(true);
    expect(await cycles.abandon('acme', 'c2', gone, startedMs + 120_000)).toBe(false);
    expect((await cycles.get('acme', 'c2'))?.abandoned).toEqual({ ...own, batches: 3 });
    expect(await cycles.overdue(new Date(startedMs + 179_999))).toEqual([
      { tenantId: 'acme', cycleId: 'c1' },
    ]);
  });

  it('listed should write nothing for a cycle Redis does not hold (never begun, or lost with a wipe)', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const listedAt = new Date(startedMs + 30_000).toISOString();
    await cycles.listed('acme', 'never', { totalBatches: 2, totalDevices: 4, listedAt });
    expect(await redis.client.exists(`${redis.prefix}cycle:acme:never`)).toBe(0);
    expect(await cycles.get('acme', 'never')).toBeNull();
  });

  it('listed should undo the abandonment of a cycle taken over from a poller alive after all, and give it its close back', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    await cycles.begin({ ...begin, cycleId: 'c2' });
    const deadlineMs = startedMs + 10 * 60_000;
    const gone = { code: 'POLLER_GONE', at: new Date(startedMs + 60_000).toISOString() };
    const takeoverClose = new Date(startedMs + 120_000);
    // Taken over, and then its poller, whose renewals had failed, records its listing: its batches still come.
    await cycles.abandon('acme', 'c1', gone, takeoverClose.getTime());
    await cycles.holdOpen('acme', 'c2', deadlineMs + 5 * 60_000);
    await cycles.abandon('acme', 'c2', gone, takeoverClose.getTime());
    const totals = { totalBatches: 3, totalDevices: 1200, listedAt: takeoverClose.toISOString() };
    await cycles.listed('acme', 'c1', totals);
    await cycles.listed('acme', 'c2', totals);
    const state = await cycles.get('acme', 'c1');
    expect(state).toMatchObject({ totalBatches: 3, totalDevices: 1200 });
    expect(state?.abandoned).toBeUndefined();
    expect(await cycles.overdue(takeoverClose)).toEqual([]);
    expect(await cycles.overdue(new Date(deadlineMs))).toEqual([{ tenantId: 'acme', cycleId: 'c1' }]);
    // A close held open before the takeover is the one it gets back.
    expect(await cycles.overdue(new Date(deadlineMs + 5 * 60_000))).toHaveLength(2);
    // A published cycle keeps its abandonment, the reason it was partial.
    await cycles.begin({ ...begin, cycleId: 'c3' });
    await cycles.abandon('acme', 'c3', gone, takeoverClose.getTime());
    await cycles.claimPublication('acme', 'c3', 'partial', takeoverClose.getTime());
    await cycles.listed('acme', 'c3', totals);
    expect((await cycles.get('acme', 'c3'))?.abandoned).toEqual(gone);
    expect(await cycles.overdue(new Date(deadlineMs + 5 * 60_000))).toHaveLength(2);
  });

  it('listed should close at once a cycle whose batches were all recorded before it, abandoned meanwhile or not', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const gone = { code: 'POLLER_GONE', at: new Date(startedMs + 60_000).toISOString() };
    const takeoverClose = startedMs + 120_000;
    const listedAt = new Date(startedMs + 90_000);
    const totals = { totalBatches: 3, totalDevices: 6, listedAt: listedAt.toISOString() };
    for (const cycleId of ['c1', 'c2']) {
      await cycles.begin({ ...begin, cycleId });
      // c1 taken over from a poller alive after all; c2 in the usual course.
      if (cycleId === 'c1') await cycles.abandon('acme', cycleId, gone, takeoverClose);
      // The last batch (its totals in its header) overtook batch 1, so no batch found the cycle whole.
      for (const batchIndex of [0, 2, 1]) await cycles.recordBatch('acme', cycleId, batchIndex, {});
      await cycles.listed('acme', cycleId, totals);
    }
    // Only the sweep can close them: due at the listing, not at the deadline after the next cycle's summary.
    expect(await cycles.overdue(listedAt)).toEqual([
      { tenantId: 'acme', cycleId: 'c1' },
      { tenantId: 'acme', cycleId: 'c2' },
    ]);
    // One still missing a batch keeps its deadline.
    await cycles.begin({ ...begin, cycleId: 'c3' });
    await cycles.recordBatch('acme', 'c3', 0, {});
    await cycles.listed('acme', 'c3', totals);
    expect(await cycles.overdue(listedAt)).toHaveLength(2);
  });

  it('lost should record a batch once, with its devices, and recordBatch take it back when the batch is scored after all', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    await cycles.listed('acme', 'c1', { totalBatches: 4, totalDevices: 1400, listedAt: begin.startedAt });
    await cycles.recordBatch('acme', 'c1', 0, { devices: 500 });
    expect(await cycles.lost('acme', 'c1', 1, 500, startedMs)).toBe(true);
    expect(await cycles.lost('acme', 'c1', 1, 500, startedMs)).toBe(false);
    expect(await cycles.lost('acme', 'c1', 2, undefined, startedMs)).toBe(true);
    expect(await cycles.get('acme', 'c1')).toMatchObject({
      scoredBatches: 1,
      lostBatches: 2,
      lostDevices: 500,
    });
    expect(await redis.client.pttl(`${redis.prefix}cycle-lost:acme:c1`)).toBeGreaterThan(0);
    // Batch 1 redelivered and scored after all: scored, no longer lost, counted once.
    const { state } = await cycles.recordBatch('acme', 'c1', 1, { devices: 500 });
    expect(state).toMatchObject({ scoredBatches: 2, lostBatches: 1, lostDevices: 0 });
    expect(state).toEqual(await cycles.get('acme', 'c1'));
    // A scored batch is not lost, nor is one past the cycle's batches.
    expect(await cycles.lost('acme', 'c1', 0, 500, startedMs)).toBe(false);
    expect(await cycles.lost('acme', 'c1', 4, 500, startedMs)).toBe(false);
    await cycles.recordBatch('acme', 'c1', 2, { devices: 400 });
    const scored = await cycles.get('acme', 'c1');
    expect(scored?.lostBatches).toBeUndefined();
    expect(scored?.lostDevices).toBeUndefined();
  });

  it('lost should leave a published or a never begun cycle as it is', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    expect(await cycles.lost('acme', 'never', 0, 1, startedMs)).toBe(false);
    expect(await redis.client.exists(`${redis.prefix}cycle-lost:acme:never`)).toBe(0);
    await cycles.begin(begin);
    await cycles.claimPublication('acme', 'c1', 'partial', startedMs);
    expect(await cycles.lost('acme', 'c1', 0, 1, startedMs)).toBe(false);
    expect((await cycles.get('acme', 'c1'))?.lostBatches).toBeUndefined();
  });

  it('lost should bring the close forward once every batch is scored or lost, listed before or after', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const lostAt = startedMs + 60_000;
    const totals = { totalBatches: 3, totalDevices: 6, listedAt: new Date(startedMs + 30_000).toISOString() };
    for (const cycleId of ['c1', 'c2', 'c3']) await cycles.begin({ ...begin, cycleId });
    // c1: listed, two batches scored, the third lost last.
    await cycles.listed('acme', 'c1', totals);
    await cycles.recordBatch('acme', 'c1', 0, {});
    await cycles.recordBatch('acme', 'c1', 2, {});
    expect(await cycles.lost('acme', 'c1', 1, 2, lostAt - 1)).toBe(true);
    // c2: a batch lost and the others scored before the listing was recorded.
    await cycles.lost('acme', 'c2', 0, 2, lostAt);
    for (const batchIndex of [1, 2]) await cycles.recordBatch('acme', 'c2', batchIndex, {});
    // c3: one batch still on its way keeps the deadline.
    await cycles.listed('acme', 'c3', totals);
    await cycles.lost('acme', 'c3', 0, 2, lostAt);
    await cycles.recordBatch('acme', 'c3', 1, {});
    expect(await cycles.overdue(new Date(lostAt))).toEqual([{ tenantId: 'acme', cycleId: 'c1' }]);
    await cycles.listed('acme', 'c2', { ...totals, listedAt: new Date(lostAt).toISOString() });
    expect(await cycles.overdue(new Date(lostAt))).toEqual([
      { tenantId: 'acme', cycleId: 'c1' },
      { tenantId: 'acme', cycleId: 'c2' },
    ]);
    // An abandoned cycle: once every batch it emitted is scored or lost.
    await cycles.begin({ ...begin, cycleId: 'c4' });
    await cycles.recordBatch('acme', 'c4', 0, {});
    const abandonment = { batches: 2, devices: 4, code: 'CYCLE_ABORTED', at: new Date(lostAt).toISOString() };
    await cycles.abandon('acme', 'c4', abandonment, startedMs + 5 * 60_000);
    expect(await cycles.overdue(new Date(lostAt))).toHaveLength(2);
    await cycles.lost('acme', 'c4', 1, 2, lostAt);
    expect(await cycles.overdue(new Date(lostAt))).toHaveLength(3);
  });

  it('recordLostBatches should record the cycle batch a dead letter names, and nothing for another message', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    const record = recordLostBatches(cycles);
    const header = { schemaVersion: 1, tenantId: 'acme', cycleId: 'c1' };
    const letter = (key: string | null, payload: unknown) => ({
      topic: 'urs.device-batches',
      partition: 0,
      offset: '0',
      key,
      payload,
      code: 'X',
    });
    await record(letter('acme', { ...header, batchIndex: 0, devices: [{ id: 'd1' }, { id: 'd2' }] }));
    await record(letter('acme', { ...header, batchIndex: 1 }));
    // A correction batch: its devices are the cycle's batches' own, counted there.
    await record(letter('acme', { ...header, batchIndex: 4, corrections: [], devices: [{ id: 'd1' }] }));
    // Not a batch of a cycle: not JSON, another tenant's key or none, no batch index, a tenant record.
    await record(letter('acme', undefined));
    await record(letter('other', { ...header, batchIndex: 2 }));
    await record(letter(null, { ...header, batchIndex: 5 }));
    await record(letter('acme', { ...header, batchIndex: -1 }));
    await record(letter('acme', { ...header, batchIndex: '3' }));
    await record(letter('acme', { tenantId: 'acme', enabled: true }));
    expect(await cycles.get('acme', 'c1')).toMatchObject({ lostBatches: 3, lostDevices: 2 });
  });

  it('lost should not record a batch past those an abandoned cycle emitted', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    const at = new Date(startedMs + 60_000).toISOString();
    const abandonment = { batches: 2, devices: 900, code: 'DEFENDER_UNAVAILABLE', at };
    expect(await cycles.abandon('acme', 'c1', abandonment, startedMs + 120_000)).toBe(true);
    expect(await cycles.lost('acme', 'c1', 2, 500, startedMs)).toBe(false);
    expect(await cycles.lost('acme', 'c1', 1, 400, startedMs)).toBe(true);
    expect(await cycles.get('acme', 'c1')).toMatchObject({ lostBatches: 1, lostDevices: 400 });
  });

  it('enrichedOrLostBatches should count each batch enriched or lost once', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    await cycles.enriched('acme', 'c1', 0);
    await cycles.enriched('acme', 'c1', 1);
    // Lost after it was enriched (dead-lettered by the scorer), and lost before it was (by the vuln-fetcher).
    await cycles.lost('acme', 'c1', 1, 500, startedMs);
    await cycles.lost('acme', 'c1', 2, 500, startedMs);
    // The batch waiting (3) lost before, in an earlier try of it: not one of the batches before it.
    await cycles.lost('acme', 'c1', 3, 500, startedMs);
    expect(await cycles.enrichedOrLostBatches('acme', 'c1', 3)).toBe(3);
    expect(await cycles.enrichedOrLostBatches('acme', 'c1', 2)).toBe(2);
  });

  it('withdraw should take a cycle that sent no batch out of the open cycles, and a batch of it scored after all still settles it', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    await cycles.begin({ ...begin, cycleId: 'c2' });
    const at = new Date(startedMs + 60_000).toISOString();
    const stopped = { batches: 0, devices: 600, code: 'KAFKA_UNAVAILABLE', at };
    expect(await cycles.withdraw('acme', 'c1', stopped)).toBe(true);
    expect(await cycles.overdue(afterDeadline)).toEqual([{ tenantId: 'acme', cycleId: 'c2' }]);
    expect((await cycles.get('acme', 'c1'))?.abandoned).toEqual(stopped);
    // Withdrawn once: neither a second withdrawal nor a poller taking the tenant over brings it back.
    expect(await cycles.withdraw('acme', 'c1', stopped)).toBe(false);
    expect(await cycles.abandon('acme', 'c1', { code: 'POLLER_GONE', at }, startedMs + 120_000)).toBe(false);
    expect(await cycles.overdue(afterDeadline)).toEqual([{ tenantId: 'acme', cycleId: 'c2' }]);
    // The first send failed only in its answer: its batch is scored, and every batch the cycle emitted is in.
    const { state } = await cycles.recordBatch('acme', 'c1', 0, { devices: 500 });
    expect(state).toMatchObject({ scoredBatches: 1, abandoned: { batches: 0, devices: 600 } });
    expect(await cycles.claimPublication('acme', 'c1', 'partial', startedMs)).toBe(true);
  });

  it('lost should record the first batch of a withdrawn cycle, dead-lettered after all, and bring the cycle back to close now', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    const at = new Date(startedMs + 60_000).toISOString();
    expect(
      await cycles.withdraw('acme', 'c1', { batches: 0, devices: 600, code: 'KAFKA_UNAVAILABLE', at }),
    ).toBe(true);
    // The first send failed only in its answer: its batch reached Kafka, and a consumer dead-lettered it.
    const closeAt = startedMs + 90_000;
    expect(await cycles.lost('acme', 'c1', 0, 500, closeAt)).toBe(true);
    expect(await cycles.get('acme', 'c1')).toMatchObject({
      lostBatches: 1,
      lostDevices: 500,
      abandoned: { batches: 0, devices: 600 },
    });
    // Every batch the cycle emitted is in: the sweep closes it (partial) at once, not never.
    expect(await cycles.overdue(new Date(closeAt))).toEqual([{ tenantId: 'acme', cycleId: 'c1' }]);
    // Recorded once: the dead letter of a later consumer changes nothing.
    expect(await cycles.lost('acme', 'c1', 0, 500, closeAt + 1_000)).toBe(false);
    // No other batch of it was ever emitted.
    expect(await cycles.lost('acme', 'c1', 1, 500, closeAt)).toBe(false);
  });

  it('withdraw should leave a cycle with a batch recorded, listed, published or never begun to abandon', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const at = new Date(startedMs + 60_000).toISOString();
    const stopped = { batches: 0, devices: 1, code: 'KAFKA_UNAVAILABLE', at };
    expect(await cycles.withdraw('acme', 'never', stopped)).toBe(false);
    expect(await redis.client.exists(`${redis.prefix}cycle:acme:never`)).toBe(0);
    for (const cycleId of ['scored', 'lost', 'listed', 'published'])
      await cycles.begin({ ...begin, cycleId });
    await cycles.recordBatch('acme', 'scored', 0, { devices: 1 });
    await cycles.lost('acme', 'lost', 0, 1, startedMs);
    await cycles.listed('acme', 'listed', { totalBatches: 1, totalDevices: 1, listedAt: at });
    await cycles.claimPublication('acme', 'published', 'partial', startedMs);
    for (const cycleId of ['scored', 'lost', 'listed', 'published'])
      expect(await cycles.withdraw('acme', cycleId, stopped)).toBe(false);
    expect((await cycles.get('acme', 'scored'))?.abandoned).toBeUndefined();
    expect((await cycles.overdue(afterDeadline)).map(({ cycleId }) => cycleId).sort()).toEqual([
      'listed',
      'lost',
      'scored',
    ]);
  });

  it('abandon should leave a listed, a published or a never begun cycle as it is', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const abandonment = { batches: 1, devices: 1, code: 'CYCLE_ABORTED', at: begin.startedAt };
    expect(await cycles.abandon('acme', 'never', abandonment, startedMs)).toBe(false);
    expect(await redis.client.exists(`${redis.prefix}cycle:acme:never`)).toBe(0);
    await cycles.begin(begin);
    await cycles.listed('acme', 'c1', { totalBatches: 1, totalDevices: 1, listedAt: begin.startedAt });
    expect(await cycles.abandon('acme', 'c1', abandonment, startedMs)).toBe(false);
    expect((await cycles.get('acme', 'c1'))?.abandoned).toBeUndefined();
    expect(await cycles.overdue(new Date(startedMs))).toEqual([]);
  });

  it('claimPublication should let exactly one caller publish and close the cycle', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    expect(await cycles.overdue(afterDeadline)).toEqual([{ tenantId: 'acme', cycleId: 'c1' }]);
    const claims = await Promise.all([
      cycles.claimPublication('acme', 'c1', 'complete', startedMs),
      cycles.claimPublication('acme', 'c1', 'partial', startedMs),
    ]);
    expect(claims.filter(Boolean)).toHaveLength(1);
    expect((await cycles.get('acme', 'c1'))?.published).toBe('complete');
    expect(await cycles.overdue(afterDeadline)).toEqual([]);
  });

  it('claimPublication should list the summary as owed in the same step, with the status it claimed', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const published = createPublishedStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    expect(await cycles.claimPublication('acme', 'c1', 'partial', startedMs)).toBe(true);
    // The claimant stops here (a crash, a Redis error before its lock): the summary is still owed.
    expect(await published.summariesOwed(startedMs - 1)).toEqual([]);
    expect(await published.summariesOwed(startedMs)).toEqual([
      { tenantId: 'acme', cycleId: 'c1', status: 'partial' },
    ]);
    // A second claim changes nothing; the summary sent owes nothing any more.
    expect(await cycles.claimPublication('acme', 'c1', 'complete', startedMs + 1)).toBe(false);
    expect(await published.lockSummary('acme', 'c1', 'sender', 30_000)).toBe(true);
    await published.summarySent('acme', 'c1', 'sender');
    expect(await published.summariesOwed(startedMs + 1)).toEqual([]);
  });

  it('the summary lock should be renewed and given back only by its holder, and held by none once the summary was sent', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const published = createPublishedStore(redis.client, redis.prefix);
    const lockKey = `${redis.prefix}summary-lock:acme:c1`;
    await cycles.begin(begin);
    expect(await cycles.claimPublication('acme', 'c1', 'complete', startedMs)).toBe(true);
    expect(await published.lockSummary('acme', 'c1', 'first', 30_000)).toBe(true);
    expect(await published.lockSummary('acme', 'c1', 'second', 30_000)).toBe(false);
    expect(await published.renewSummaryLock('acme', 'c1', 'first', 30_000)).toBe(true);
    // The first sender stalled past its lock: it lapsed, and a second sender took it.
    await redis.client.del(lockKey);
    expect(await published.lockSummary('acme', 'c1', 'second', 60_000)).toBe(true);
    // The first neither extends the second's lock nor gives it back.
    expect(await published.renewSummaryLock('acme', 'c1', 'first', 1_000)).toBe(false);
    await published.unlockSummary('acme', 'c1', 'first');
    expect(await redis.client.get(lockKey)).toBe('second');
    expect(await redis.client.pttl(lockKey)).toBeGreaterThan(30_000);
    // Its holder gives it back; sent by the second, the summary is held by none, and taken by none again.
    await published.unlockSummary('acme', 'c1', 'second');
    expect(await redis.client.exists(lockKey)).toBe(0);
    expect(await published.lockSummary('acme', 'c1', 'second', 30_000)).toBe(true);
    await published.summarySent('acme', 'c1', 'first');
    expect(await redis.client.get(lockKey)).toBe('second');
    expect(await published.renewSummaryLock('acme', 'c1', 'second', 30_000)).toBe(false);
    await published.summarySent('acme', 'c1', 'second');
    expect(await redis.client.exists(lockKey)).toBe(0);
    expect(await published.lockSummary('acme', 'c1', 'third', 30_000)).toBe(false);
  });

  it('claimPublication should give a cycle hash it makes anew (the first one expired) an expiry', async () => {
    const cycles = createCycleStore(redis.client, redis.prefix, 60_000);
    expect(await cycles.claimPublication('acme', 'gone', 'partial', startedMs)).toBe(true);
    const ttl = await redis.client.pttl(`${redis.prefix}cycle:acme:gone`);
    expect(ttl).toBeGreaterThan(50_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
    // A cycle the poller began keeps the expiry it has.
    await cycles.begin(begin);
    const before = await redis.client.pttl(`${redis.prefix}cycle:acme:c1`);
    await cycles.claimPublication('acme', 'c1', 'complete', startedMs);
    expect(await redis.client.pttl(`${redis.prefix}cycle:acme:c1`)).toBeLessThanOrEqual(before);
  });

  it("mergedDevices should record a begun cycle's merged devices once each, expiring with the cycle, and nothing for a cycle Redis does not hold", async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    const merged = `${redis.prefix}cycle-merged:acme:c1`;
    await cycles.mergedDevices('acme', 'c1', ['m1']);
    expect(await redis.client.exists(merged)).toBe(0);
    await cycles.begin(begin);
    // Thousands at once (Lua unpacks only so many), and a try again adding the same ones.
    const ids = Array.from({ length: 9_000 }, (_, n) => `m${n}`);
    await cycles.mergedDevices('acme', 'c1', ids);
    await cycles.mergedDevices('acme', 'c1', ['m1', 'm2']);
    expect(await redis.client.scard(merged)).toBe(9_000);
    const hashTtl = await redis.client.pttl(`${redis.prefix}cycle:acme:c1`);
    const ttl = await redis.client.pttl(merged);
    expect(ttl).toBeLessThanOrEqual(hashTtl);
    expect(ttl).toBeGreaterThan(hashTtl - 60_000);
    // Held open later, it outlives the later close as the hash does.
    const deadlineMs = startedMs + 10 * 60_000;
    expect(await cycles.holdOpen('acme', 'c1', deadlineMs + 60 * 60_000)).toBe(true);
    expect(await redis.client.pttl(merged)).toBeGreaterThan(hashTtl + 59 * 60_000);
  });

  it("holdOpen should move an open cycle's close later only, and never an abandoned or published one's", async () => {
    const cycles = createCycleStore(redis.client, redis.prefix);
    await cycles.begin(begin);
    const deadlineMs = startedMs + 10 * 60_000;
    expect(await cycles.holdOpen('acme', 'c1', deadlineMs + 5 * 60_000)).toBe(true);
    expect(await cycles.overdue(afterDeadline)).toEqual([]);
    expect(await cycles.holdOpen('acme', 'c1', deadlineMs)).toBe(false);
    expect(await cycles.overdue(new Date(deadlineMs + 5 * 60_000))).toEqual([
      { tenantId: 'acme', cycleId: 'c1' },
    ]);
    // The hash outlives the later close by the retention, as it outlived the deadline.
    expect(await redis.client.pttl(`${redis.prefix}cycle:acme:c1`)).toBeGreaterThan(
      deadlineMs + 5 * 60_000 + 24 * 60 * 60_000 - Date.now() - 60_000,
    );
    expect(await cycles.holdOpen('acme', 'never-begun', deadlineMs + 60_000)).toBe(false);
    await cycles.begin({ ...begin, cycleId: 'c2' });
    const gone = { code: 'POLLER_GONE', at: new Date(startedMs + 60_000).toISOString() };
    await cycles.abandon('acme', 'c2', gone, startedMs + 120_000);
    expect(await cycles.holdOpen('acme', 'c2', deadlineMs + 60_000)).toBe(false);
    await cycles.claimPublication('acme', 'c1', 'partial', startedMs);
    expect(await cycles.holdOpen('acme', 'c1', deadlineMs + 10 * 60_000)).toBe(false);
    expect(await cycles.overdue(new Date(deadlineMs + 10 * 60_000))).toEqual([
      { tenantId: 'acme', cycleId: 'c2' },
    ]);
  });
});
