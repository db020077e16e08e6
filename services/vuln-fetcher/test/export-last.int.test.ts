import { ContractError, type DeviceBatch, type EnrichedBatch, type TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createAnsweredCalls, createBulkVulnerabilityCache, createCycleStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { handlerFailureOf, isHandledAgain, type InboundMessage } from '@urs/bus';
import { inboundMessage, testRedisPerTest, topicNotAuthorised, waitFor } from '@urs/testkit';
import { createEnrichHandler } from '../src/handler';
import type { SourceProvider } from '../src/sources';
import type { VulnerabilityLike } from '../src/summarise';
import { capturingPublisher } from './handler-support';

// A bulk cycle that reads its export last, against a real Redis: the cache of exports and the cycle store
// are the ones the services share; Defender is a fake export of rows.

const DIRECTORY_A = '0a0a0a0a-0000-4000-8000-00000000000a';
const DIRECTORY_B = '0b0b0b0b-0000-4000-8000-00000000000b';

/** The tenant's record as the registrar keeps it: its app in Entra directory A, in the commercial cloud. */
const recordOf = (defender: { azureTenantId?: string; cloud?: string } = {}): TenantRecord =>
  ({
    tenantId: 't1',
    revision: 1,
    defender: { pollIntervalMinutes: 10, azureTenantId: DIRECTORY_A, cloud: 'commercial', ...defender },
  }) as unknown as TenantRecord;

const cve = (id: string, cvssV3: number): VulnerabilityLike => ({ id, cvssV3 });

/** A cycle of two batches: d1–d3, then d4–d5 with the totals. */
function cycleBatches(cycleId: string, startedAt: string, cvssThreshold = 9): [DeviceBatch, DeviceBatch] {
  const header = {
    schemaVersion: 1 as const,
    tenantId: 't1',
    cycleId,
    cycleStartedAt: startedAt,
    vulnerabilityMode: 'bulk' as const,
    cvssThreshold,
  };
  return [
    { ...header, batchIndex: 0, lastBatch: false, devices: [{ id: 'd1' }, { id: 'd2' }, { id: 'd3' }] },
    {
      ...header,
      batchIndex: 1,
      lastBatch: true,
      totalBatches: 2,
      totalDevices: 5,
      devices: [{ id: 'd4' }, { id: 'd5' }],
    },
  ];
}

describe('a bulk cycle that reads its export last', () => {
  const redis = testRedisPerTest();

  function setup(options: { correctionWaitMs?: number; skipUnchanged?: boolean; bulkWaitMs?: number } = {}) {
    /** Sends that fail before they reach the topic, from the next one on. */
    const failing = {
      sends: 0,
      /** Sends that go through before those fail. */
      after: 0,
      /** What a failing send throws (default: the broker unreachable). */
      error: undefined as (() => Error) | undefined,
    };
    /** Where each send began in `sent`. */
    const sendStarts: number[] = [];
    const { sent, publisher } = capturingPublisher(() => {
      sendStarts.push(sent.length);
      if (failing.after > 0) failing.after--;
      else if (failing.sends > 0) {
        failing.sends--;
        throw failing.error?.() ?? new Error('the broker is unreachable');
      }
    });
    /** The rows the next export answers, by device. */
    const exported = {
      rows: new Map<string, VulnerabilityLike[]>(),
      calls: 0,
      fails: false,
      /** When set, the next export waits for it before it answers. */
      held: undefined as Promise<void> | undefined,
      /** The `generatedTime` the snapshot question answers (it fails when undefined), and how often it was asked. */
      generatedTime: undefined as string | undefined,
      probes: 0,
    };
    const sources: SourceProvider = {
      forTenant: () => ({
        machineVulnerabilities: async () => [],
        bulkVulnerabilities: async (onRow) => {
          exported.calls++;
          const rows = exported.rows;
          await exported.held;
          if (exported.fails) throw new Error('the export failed');
          for (const [deviceId, list] of rows) for (const row of list) onRow(deviceId, row);
        },
        exportGeneratedTime: async () => {
          exported.probes++;
          if (exported.generatedTime === undefined) throw new Error('the Defender API could not be reached');
          return exported.generatedTime;
        },
      }),
      forget: () => undefined,
      close: () => undefined,
    };
    const cache = createBulkVulnerabilityCache(redis.client, redis.prefix);
    /** Stores of a read export that fail before they write it (the process killed after the batch's sends). */
    const storing = { fails: 0 };
    const bulkCache: typeof cache = {
      ...cache,
      save: async (...args) => {
        if (storing.fails > 0) {
          storing.fails--;
          throw new Error('the process was killed');
        }
        return cache.save(...args);
      },
    };
    const cycles = createCycleStore(redis.client, redis.prefix);
    /** The notes the tenant's status was given. */
    const notes: string[] = [];
    const metrics = new Registry({ processMetrics: false });
    /** Cycles that asked for the export's snapshot, by outcome. */
    const snapshots = (outcome: string): number =>
      metrics.counter('urs_bulk_export_snapshots_total', '').get({ outcome });
    /** Devices of bulk batches counted in `urs_vulnerability_fetches_total`, by outcome. */
    const fetches = (outcome: string): number =>
      metrics.counter('urs_vulnerability_fetches_total', '').get({ mode: 'bulk', outcome });
    let clock = Date.parse('2026-01-01T10:00:05.000Z');
    /** The tenant's record the batches are handled with; a test may switch its app. */
    const tenant = { record: recordOf() };
    /** A vuln-fetcher over the same Redis, Defender and topic: another replica for each call. */
    const replica = () =>
      createEnrichHandler({
        tenants: {
          lookup: async () => ({ record: tenant.record, rebuilt: true }),
          updatePollingStatus: async (_tenantId, status) => {
            notes.push(status.note ?? '');
            return true;
          },
        },
        sources,
        bulkCache,
        answers: createAnsweredCalls(redis.client, redis.prefix),
        cycles,
        exportLast: true,
        skipUnchangedExport: options.skipUnchanged ?? false,
        correctionWaitMs: options.correctionWaitMs,
        publisher,
        topic: 'urs.devices-enriched',
        logger: silentLogger,
        metrics,
        concurrency: 2,
        bulkWaitMs: options.bulkWaitMs ?? 1_000,
        bulkClaimMs: 1_000,
        bulkPollMs: 5,
        now: () => new Date((clock += 1000)),
      });
    /** `fields`: what else the runner gives the message (`handledAgainAfter`). */
    const handlerOn =
      (handler: ReturnType<typeof replica>) =>
      (batch: DeviceBatch, fields: Partial<InboundMessage<DeviceBatch>> = {}) =>
        handler(inboundMessage(batch, { topic: 'urs.device-batches', key: batch.tenantId, ...fields }));
    const handle = handlerOn(replica());
    /** Hands batches to another replica. */
    const another = () => handlerOn(replica());
    /** The batch indexes of each send (of the ones in `sent`), in order. */
    const sends = (): number[][] =>
      sendStarts
        .map((start, at) => sent.slice(start, sendStarts[at + 1] ?? sent.length))
        .filter((batches) => batches.length > 0)
        .map((batches) => batches.map((batch) => batch.batchIndex));
    const forgetSent = (): void => {
      sent.length = 0;
      sendStarts.length = 0;
    };
    return {
      handle,
      another,
      sent,
      sends,
      forgetSent,
      exported,
      bulkCache,
      cycles,
      failing,
      storing,
      notes,
      snapshots,
      fetches,
      tenant,
    };
  }

  /** Runs the tenant's first bulk cycle (c1) with these export rows, and forgets what it sent. */
  async function firstCycle(context: ReturnType<typeof setup>, rows: [string, VulnerabilityLike[]][]) {
    context.exported.rows = new Map(rows);
    for (const batch of cycleBatches('c1', '2026-01-01T10:00:00.000Z')) await context.handle(batch);
    context.sent.length = 0;
  }

  /** The next cycle's (c2) batches, the cycle begun in the cycle store as the poller begins it. */
  async function nextCycle(
    context: ReturnType<typeof setup>,
    cvssThreshold = 9,
    cycleId = 'c2',
    startedAt = '2026-01-01T10:10:00.000Z',
  ) {
    const batches = cycleBatches(cycleId, startedAt, cvssThreshold);
    await context.cycles.begin({
      tenantId: 't1',
      cycleId,
      startedAt: batches[0].cycleStartedAt,
      // The cycle's keys expire a day after its deadline: a deadline from now keeps them for the test.
      deadlineAt: new Date(Date.now() + 600_000).toISOString(),
    });
    return batches;
  }

  const critical = (batch: EnrichedBatch | undefined) =>
    Object.fromEntries(
      (batch?.devices ?? []).map((device) => [device.machine.id, device.vulnerabilities?.criticalCveCount]),
    );

  /**
   * 2,500 devices, each with CVE-1 at 8.1 in the first cycle; then Microsoft rescores CVE-1 to 9.8: every device
   * of the export changes. The next cycle's first batch handled and what it sent forgotten; returns the devices
   * and the next cycle's last batch.
   */
  async function rescoredFleet(context: ReturnType<typeof setup>) {
    const fleet = Array.from({ length: 2_500 }, (_, i) => `x${i}`);
    await firstCycle(
      context,
      fleet.map((id): [string, VulnerabilityLike[]] => [id, [cve('CVE-1', 8.1)]]),
    );
    context.exported.rows = new Map(fleet.map((id) => [id, [cve('CVE-1', 9.8)]]));
    const [next0, next1] = await nextCycle(context);
    await context.handle(next0);
    context.forgetSent();
    return { fleet, next1 };
  }

  it("should enrich at once from the latest export, then correct the devices the cycle's own export changed", async () => {
    const context = setup();
    const { handle, sent, exported, bulkCache, cycles } = context;
    exported.rows = new Map([
      ['d1', [cve('CVE-1', 9.8)]],
      ['d4', [cve('CVE-4', 9.1)]],
      ['d5', [cve('CVE-5', 9.5)]],
    ]);
    // The tenant's first bulk cycle has no latest export: its batches wait for their own.
    const [first0, first1] = cycleBatches('c1', '2026-01-01T10:00:00.000Z');
    await handle(first0);
    await handle(first1);
    expect(exported.calls).toBe(1);
    expect(sent.map((batch) => batch.batchIndex)).toEqual([0, 1]);
    expect(critical(sent[0])).toEqual({ d1: 1, d2: 0, d3: 0 });
    expect(sent.some((batch) => batch.corrections !== undefined)).toBe(false);
    const latest = await bulkCache.latest('t1');
    expect(latest?.cycleId).toBe('c1');

    // The next cycle: d1's CVE is fixed, d2 has a new one, d4's got worse, d5 is as it was.
    exported.rows = new Map([
      ['d2', [cve('CVE-2', 9.9)]],
      ['d4', [cve('CVE-4', 9.1), cve('CVE-44', 9.3)]],
      ['d5', [cve('CVE-5', 9.5)]],
    ]);
    sent.length = 0;
    const [next0, next1] = await nextCycle(context);
    await handle(next0);
    expect(exported.calls).toBe(1);
    expect(sent[0]).toMatchObject({ batchIndex: 0, collectedAt: latest?.collectedAt });
    expect(critical(sent[0])).toEqual({ d1: 1, d2: 0, d3: 0 });

    await handle(next1);
    expect(exported.calls).toBe(2);
    const [last, correction, ...more] = sent.slice(1);
    expect(more).toEqual([]);
    expect(last).toMatchObject({ batchIndex: 1, lastBatch: true, totalBatches: 3, totalDevices: 5 });
    expect(critical(last)).toEqual({ d4: 2, d5: 1 });
    expect(correction).toMatchObject({
      batchIndex: 2,
      lastBatch: false,
      devices: [],
      collectedAt: last?.collectedAt,
    });
    expect(correction).not.toHaveProperty('totalBatches');
    const corrected = Object.fromEntries(
      (correction?.corrections ?? []).map((item) => [item.deviceId, item.vulnerabilities]),
    );
    expect(Object.keys(corrected).sort()).toEqual(['d1', 'd2', 'd4']);
    expect(corrected['d1']).toEqual({
      criticalCveCount: 0,
      totalCveCount: 0,
      maxCvss: null,
      cvssThreshold: 9,
      topCveIds: [],
    });
    expect(corrected['d2']).toMatchObject({ criticalCveCount: 1, topCveIds: ['CVE-2'] });
    expect(corrected['d4']).toMatchObject({ criticalCveCount: 2 });
    // The publisher counts the correction: the poller's two batches and one more.
    await cycles.listed('t1', 'c2', { totalBatches: 2, totalDevices: 5, listedAt: last?.collectedAt ?? '' });
    expect((await cycles.get('t1', 'c2'))?.totalBatches).toBe(3);
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c2');
    // The export it replaced stays one poll interval (10 minutes), not the cache's two hours.
    const replacedTtl = await redis.client.pttl(`${redis.prefix}vuln-bulk:t1:c1`);
    expect(replacedTtl).toBeGreaterThan(0);
    expect(replacedTtl).toBeLessThanOrEqual(10 * 60_000);
  });

  it('should count the devices of the batch that reads the export whose vulnerabilities it does not hold by why', async () => {
    const context = setup();
    const { handle, exported, fetches } = context;
    exported.generatedTime = '2026-01-01T12:00:00Z';
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    const [next0, next1] = await nextCycle(context);
    // Excluded from vulnerability management; onboarded after the snapshot.
    next1.devices = [
      { id: 'd4', isExcluded: true },
      { id: 'd5', firstSeen: '2026-01-01T13:00:00Z' },
    ];
    await handle(next0);
    await handle(next1);
    expect(exported.calls).toBe(2);
    // The first cycle's five devices and the next cycle's first three.
    expect(['ok', 'not-held', 'not-in-snapshot'].map(fetches)).toEqual([8, 1, 1]);
  });

  it("should leave the devices with the latest export's vulnerabilities when the cycle's own export fails", async () => {
    const context = setup();
    const { handle, sent, exported, bulkCache } = context;
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    exported.fails = true;
    const [next0, next1] = await nextCycle(context);
    await handle(next0);
    await handle(next1);
    expect(exported.calls).toBe(2);
    expect(critical(sent[0])).toEqual({ d1: 1, d2: 0, d3: 0 });
    expect(sent[1]?.devices.map((device) => device.fetchError?.message)).toEqual([
      'the export failed',
      'the export failed',
    ]);
    expect(sent).toHaveLength(2);
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c1');
  });

  it('should read the export first again when the CVSS threshold changed since the latest export', async () => {
    const context = setup();
    const { handle, sent, exported, bulkCache } = context;
    await firstCycle(context, [['d1', [cve('CVE-1', 8.1)]]]);
    const [next0, next1] = await nextCycle(context, 8);
    await handle(next0);
    expect(exported.calls).toBe(2);
    expect(critical(sent[0])).toEqual({ d1: 1, d2: 0, d3: 0 });
    await handle(next1);
    expect(sent.map((batch) => [batch.batchIndex, batch.corrections?.length])).toEqual([
      [0, undefined],
      [1, undefined],
    ]);
    expect(await bulkCache.latest('t1')).toMatchObject({ cycleId: 'c2', cvssThreshold: 8 });
  });

  it("should not enrich from the latest export once the tenant's app is in another Entra directory, nor correct from it", async () => {
    const context = setup();
    const { handle, sent, exported, bulkCache, tenant } = context;
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    // The tenant admin moves the app to directory B, whose app may not read vulnerabilities.
    tenant.record = recordOf({ azureTenantId: DIRECTORY_B });
    exported.fails = true;
    const [next0, next1] = await nextCycle(context);
    await handle(next0);
    // Directory A's export holds none of B's devices: "no vulnerabilities" would be made up.
    expect(exported.calls).toBe(2);
    expect(sent[0]?.devices.map((device) => [device.vulnerabilities, device.fetchError?.message])).toEqual([
      [null, 'the export failed'],
      [null, 'the export failed'],
      [null, 'the export failed'],
    ]);
    await handle(next1);
    expect(sent.map((batch) => [batch.batchIndex, batch.corrections])).toEqual([
      [0, undefined],
      [1, undefined],
    ]);
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c1');

    // B's app can read them now: its export, read first, becomes the latest with B's directory.
    exported.fails = false;
    exported.rows = new Map([['d2', [cve('CVE-2', 9.9)]]]);
    sent.length = 0;
    const [third0, third1] = await nextCycle(context, 9, 'c3', '2026-01-01T10:20:00.000Z');
    await handle(third0);
    expect(exported.calls).toBe(3);
    expect(critical(sent[0])).toEqual({ d1: 0, d2: 1, d3: 0 });
    await handle(third1);
    expect(sent.some((batch) => batch.corrections !== undefined)).toBe(false);
    expect(await bulkCache.latest('t1')).toMatchObject({
      cycleId: 'c3',
      azureTenantId: DIRECTORY_B,
      cloud: 'commercial',
    });
  });

  it('should not enrich from the latest export once the tenant moved to another cloud, but from one of its directory in any case', async () => {
    const context = setup();
    const { handle, sent, exported, tenant } = context;
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    // The same directory, its GUID written in capitals: the same app's export.
    tenant.record = recordOf({ azureTenantId: DIRECTORY_A.toUpperCase() });
    const [next0, next1] = await nextCycle(context);
    await handle(next0);
    expect(exported.calls).toBe(1);
    expect(critical(sent[0])).toEqual({ d1: 1, d2: 0, d3: 0 });
    await handle(next1);
    // Another cloud: another Defender, whose devices the latest export does not hold.
    tenant.record = recordOf({ cloud: 'gcc' });
    exported.fails = true;
    sent.length = 0;
    const [third0] = await nextCycle(context, 9, 'c3', '2026-01-01T10:20:00.000Z');
    await handle(third0);
    expect(exported.calls).toBe(3);
    expect(sent).toHaveLength(1);
    const devices = sent[0]?.devices ?? [];
    expect(devices.map((device) => device.machine.id)).toEqual(['d1', 'd2', 'd3']);
    for (const device of devices) {
      expect(device.vulnerabilities).toBeNull();
      expect(device.fetchError).toEqual({ code: 'UNEXPECTED', message: 'the export failed' });
    }
  });

  it('should not enrich from a latest export kept without the directory and cloud it was read in', async () => {
    const context = setup();
    const { handle, sent, exported, bulkCache } = context;
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    // As an earlier version kept it: which app's devices it holds is not known.
    const c1 = await bulkCache.latest('t1');
    await redis.client.set(
      `${redis.prefix}vuln-bulk-latest:t1`,
      JSON.stringify({ cycleId: 'c1', collectedAt: c1?.collectedAt, cvssThreshold: 9 }),
    );
    exported.rows = new Map([['d2', [cve('CVE-2', 9.9)]]]);
    const [next0] = await nextCycle(context);
    await handle(next0);
    expect(exported.calls).toBe(2);
    expect(critical(sent[0])).toEqual({ d1: 0, d2: 1, d3: 0 });
  });

  /** Runs a first cycle (c1) and the next one's first batch; resolves the next one's last batch. */
  /**
   * Undoes what a batch handled in full wrote last, its record as enriched: as if the process had stopped
   * before that, the batch is handled again rather than skipped.
   */
  async function forgetEnriched(batch: DeviceBatch): Promise<void> {
    const key = `${redis.prefix}cycle-enriched:${batch.tenantId}:${batch.cycleId}`;
    await redis.client.srem(key, String(batch.batchIndex));
  }

  async function twoCycles(setupDone: ReturnType<typeof setup>): Promise<DeviceBatch> {
    const { handle, exported } = setupDone;
    await firstCycle(setupDone, [
      ['d1', [cve('CVE-1', 9.8)]],
      ['d4', [cve('CVE-4', 9.1)]],
    ]);
    exported.rows = new Map([['d2', [cve('CVE-2', 9.9)]]]);
    const [next0, next1] = await nextCycle(setupDone);
    await handle(next0);
    return next1;
  }

  const correctedIds = (sent: EnrichedBatch[]): string[] =>
    sent.flatMap((batch) => (batch.corrections ?? []).map((item) => item.deviceId)).sort();

  it('should store the export when the batch or its corrections are not produced, and correct from it when tried again, not read it again', async () => {
    const context = setup();
    const { handle, sent, exported, bulkCache, failing } = context;
    const last = await twoCycles(context);
    sent.length = 0;
    // Kafka refusing the produce for want of an ACL: the bus holds the batch and tries it again every few
    // seconds until the ACL is granted. Each try read the whole export from Microsoft again.
    failing.sends = 3;
    failing.error = topicNotAuthorised;
    for (let held = 0; held < 3; held++)
      await expect(handle(last)).rejects.toThrow('Topic authorization failed');
    expect(exported.calls).toBe(2);
    // Stored, not made the latest: the next cycle's batches are still enriched from c1's, which its
    // corrections compare with.
    expect(await bulkCache.state('t1', 'c2')).toMatchObject({ state: 'ready' });
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c1');
    await handle(last);
    expect(exported.calls).toBe(2);
    expect(sent.map((batch) => batch.batchIndex)).toEqual([1, 2]);
    expect(correctedIds(sent)).toEqual(['d1', 'd2', 'd4']);
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c2');
  });

  it('should not store the export when the batch fails to be sent for a reason never tried again (dead-lettered at once)', async () => {
    const context = setup();
    const { handle, bulkCache, failing } = context;
    const last = await twoCycles(context);
    // A batch its topic's contract refuses: the bus dead-letters it at once, and no try reads from a stored
    // export; stored, it would be marked ready (~16 MB of Redis at 100,000 devices) and never become the latest.
    failing.sends = 1;
    failing.error = () => new ContractError('urs/enriched-batch', [{ field: 'devices', rule: 'invalid' }]);
    const error = (await handle(last).catch((caught: unknown) => caught)) as Error;
    expect(error).toBeInstanceOf(ContractError);
    expect(isHandledAgain(error)).toBe(false);
    expect(await bulkCache.state('t1', 'c2')).not.toMatchObject({ state: 'ready' });
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c1');
  });

  it('should not store the export when the batch fails to be sent on its last attempt: the bus dead-letters it, never trying it again', async () => {
    const context = setup();
    const { handle, bulkCache, failing } = context;
    const last = await twoCycles(context);
    // A failure of the batch's own that may go away: tried again, unless this was its last attempt.
    failing.sends = 1;
    // The runner's answer on the batch's last attempt: such a failure now has the batch dead-lettered.
    const lastAttempt = (error: unknown): boolean =>
      isHandledAgain(error) && handlerFailureOf(error) !== 'retryable';
    await expect(handle(last, { handledAgainAfter: lastAttempt })).rejects.toThrow(
      'the broker is unreachable',
    );
    expect(await bulkCache.state('t1', 'c2')).not.toMatchObject({ state: 'ready' });
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c1');
  });

  it('should store the export when its corrections are not produced, and send them from it when tried again', async () => {
    const context = setup();
    const { handle, sent, sends, forgetSent, exported, failing } = context;
    const last = await twoCycles(context);
    forgetSent();
    // The batch is taken, its corrections' send fails (a broker lost in between).
    failing.after = 1;
    failing.sends = 1;
    await expect(handle(last)).rejects.toThrow('the broker is unreachable');
    await handle(last);
    expect(exported.calls).toBe(2);
    // Sent again whole (at least once), its corrections from the stored export.
    expect(sends()).toEqual([[1], [1], [2]]);
    expect(correctedIds(sent)).toEqual(['d1', 'd2', 'd4']);
  });

  it('should correct from the stored export when the last batch comes again after the export was stored', async () => {
    const context = setup();
    const { handle, sent, exported, bulkCache } = context;
    const last = await twoCycles(context);
    await handle(last);
    const first = correctedIds(sent);
    expect(first).toEqual(['d1', 'd2', 'd4']);
    // Handled again as if the process stopped before c2 became the latest: same corrections, no new read.
    // (keepLatest would not move the latest back to the older export, so the pointer is written as it was.)
    const c1 = await bulkCache.state('t1', 'c1');
    await redis.client.set(
      `${redis.prefix}vuln-bulk-latest:t1`,
      JSON.stringify({
        cycleId: 'c1',
        collectedAt: c1.state === 'ready' ? c1.collectedAt : '',
        cvssThreshold: 9,
        azureTenantId: DIRECTORY_A,
        cloud: 'commercial',
      }),
    );
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c1');
    await forgetEnriched(last);
    sent.length = 0;
    await handle(last);
    expect(exported.calls).toBe(2);
    expect(sent.map((batch) => [batch.batchIndex, batch.totalBatches])).toEqual([
      [1, 3],
      [2, undefined],
    ]);
    expect(correctedIds(sent)).toEqual(first);
  });

  it("should send the corrections after the cycle's earlier batches, also one that starts after the last", async () => {
    const context = setup();
    const { handle, sent, exported } = context;
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    exported.rows = new Map([['d4', [cve('CVE-4', 9.1)]]]);
    const [next0, next1] = await nextCycle(context);
    // Two batches of a tenant run at once: the last one claims and reads the export before batch 0 looks.
    const last = handle(next1);
    await waitFor(() => exported.calls === 2, { timeoutMs: 5_000, description: 'the export read' });
    await handle(next0);
    await last;
    expect(sent.map((batch) => batch.batchIndex)).toEqual([0, 1, 2]);
    // Batch 0 was enriched from the latest export, not held back by the export being read.
    expect(critical(sent[0])).toEqual({ d1: 1, d2: 0, d3: 0 });
    expect(correctedIds(sent)).toEqual(['d1', 'd4']);
  });

  it("should enrich the next cycle's batches only once the cycle before has made its export the latest", async () => {
    const context = setup();
    const { handle, sent, exported, bulkCache } = context;
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    const [next0, next1] = await nextCycle(context);
    await handle(next0);
    // c2's export (d2 now has the CVE) takes a while; c3's first batch comes meanwhile.
    exported.rows = new Map([['d2', [cve('CVE-2', 9.9)]]]);
    let answer: () => void = () => undefined;
    exported.held = new Promise((resolve) => (answer = resolve));
    const c2Last = handle(next1);
    await waitFor(() => exported.calls === 2, { timeoutMs: 5_000, description: "c2's export" });
    exported.held = undefined;
    const [third0] = cycleBatches('c3', '2026-01-01T10:20:00.000Z');
    const c3First = handle(third0);
    try {
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(sent.filter((batch) => batch.cycleId === 'c3')).toEqual([]);
    } finally {
      answer();
      await Promise.all([c2Last, c3First]);
    }
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c2');
    const c3 = sent.find((batch) => batch.cycleId === 'c3');
    expect(critical(c3)).toEqual({ d1: 0, d2: 1, d3: 0 });
  });

  /** Each device of the cycle as the scorer ends with it: its batch's vulnerabilities, then its corrections. */
  function finalCritical(sent: EnrichedBatch[], cycleId: string): Record<string, number | undefined> {
    const final: Record<string, number | undefined> = {};
    for (const batch of sent.filter((each) => each.cycleId === cycleId)) {
      for (const device of batch.devices) final[device.machine.id] = device.vulnerabilities?.criticalCveCount;
      for (const item of batch.corrections ?? [])
        final[item.deviceId] = item.vulnerabilities?.criticalCveCount;
    }
    return final;
  }

  /**
   * c1 with d1 critical; c2, where d2 gets a critical CVE instead, its first batch enriched and its last
   * batch failing to send (the bus tries it again later); and c3's batches, not handled yet.
   */
  async function lastOfC2Failed(context: ReturnType<typeof setup>) {
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    context.exported.rows = new Map([['d2', [cve('CVE-2', 9.9)]]]);
    const [c2First, c2Last] = await nextCycle(context);
    await context.handle(c2First);
    context.failing.sends = 1;
    await expect(context.handle(c2Last)).rejects.toThrow('the broker is unreachable');
    const [c3First, c3Last] = await nextCycle(context, 9, 'c3', '2026-01-01T10:20:00.000Z');
    return { c2Last, c3First, c3Last };
  }

  it("should correct against the latest export the cycle's batches were enriched from, when the cycle before made its own the latest since", async () => {
    const context = setup();
    const { handle, another, sent, bulkCache } = context;
    const { c2Last, c3First, c3Last } = await lastOfC2Failed(context);
    // Meanwhile another replica (the tenant's partition moved) enriches c3's first batch from c1.
    const elsewhere = another();
    await elsewhere(c3First);
    expect(critical(sent.find((batch) => batch.cycleId === 'c3'))).toEqual({ d1: 1, d2: 0, d3: 0 });
    // c2's last batch, tried again, makes c2 the latest; c3's export is c2's again.
    await handle(c2Last);
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c2');
    // c1, replaced, is not let go after one poll interval: c3's corrections compare with it.
    expect(await redis.client.pttl(`${redis.prefix}vuln-bulk:t1:c1`)).toBeGreaterThan(10 * 60_000);
    await elsewhere(c3Last);
    // Compared with c2, d1 and d2 would have kept c1's vulnerabilities.
    expect(finalCritical(sent, 'c3')).toEqual({ d1: 0, d2: 1, d3: 0, d4: 0, d5: 0 });
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c3');
  });

  it("should read the cycle's own export, not take its devices as absent, once the export it pinned is gone, and correct every device", async () => {
    const context = setup();
    const { handle, sent, exported, bulkCache } = context;
    await firstCycle(context, [
      ['d1', [cve('CVE-1', 9.8)]],
      ['d4', [cve('CVE-4', 9.1)]],
    ]);
    // d1's CVE rescored since c1's export: its batch, enriched from c1, needs the last batch's correction.
    exported.rows = new Map([
      ['d1', [cve('CVE-1', 5.0)]],
      ['d4', [cve('CVE-4', 9.1)]],
    ]);
    const [next0, next2] = await nextCycle(context);
    await handle(next0);
    expect(critical(sent[0])).toEqual({ d1: 1, d2: 0, d3: 0 });
    // Redis evicts c1 (maxmemory), or an operator flushes it, while c2 runs: its pin is still cached here.
    await redis.client.del(`${redis.prefix}vuln-bulk:t1:c1`);
    const next1 = { ...next0, batchIndex: 1, devices: [{ id: 'd4' }] };
    await handle(next1);
    expect(critical(sent[1])).toEqual({ d4: 1 });
    expect(exported.calls).toBe(2);
    await handle({ ...next2, batchIndex: 2, totalBatches: 3, devices: [{ id: 'd5' }] });
    expect(exported.calls).toBe(2);
    // Nothing left to compare with: every device the cycle's export holds is corrected, d1 as it now is.
    expect(correctedIds(sent)).toEqual(['d1', 'd4']);
    const corrections = sent.flatMap((batch) => batch.corrections ?? []);
    expect(corrections.find((item) => item.deviceId === 'd1')?.vulnerabilities?.criticalCveCount).toBe(0);
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c2');
  });

  it("should enrich the next cycle's batches from the cycle before's export once its failed last batch, tried again, succeeds", async () => {
    const context = setup();
    const { handle, sent } = context;
    const { c2Last, c3First } = await lastOfC2Failed(context);
    // The bus tries the last batch again in place; c3's first batch comes meanwhile, on the same replica.
    const c3 = handle(c3First);
    try {
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(sent.filter((batch) => batch.cycleId === 'c3')).toEqual([]);
    } finally {
      await handle(c2Last);
      await c3;
    }
    expect(critical(sent.find((batch) => batch.cycleId === 'c3'))).toEqual({ d1: 0, d2: 1, d3: 0 });
  });

  it("should enrich the next cycle's batches from the latest export there is once the cycle before's last batch is recorded lost", async () => {
    // Longer than the test may run: only the lost record ends the wait.
    const context = setup({ bulkWaitMs: 10 * 60_000 });
    const { handle, sent, cycles } = context;
    const { c2Last, c3First } = await lastOfC2Failed(context);
    const c3 = handle(c3First);
    // Its tries used up, the bus dead-letters it: the tenant's next cycles go on.
    await cycles.lost('t1', c2Last.cycleId, c2Last.batchIndex, c2Last.devices.length, Date.now());
    await c3;
    expect(critical(sent.find((batch) => batch.cycleId === 'c3'))).toEqual({ d1: 1, d2: 0, d3: 0 });
  });

  it('should send the corrections of many changed devices in batches of 1000, together in one send, after the last batch', async () => {
    const context = setup();
    const { handle, sent, sends, cycles } = context;
    const { fleet, next1 } = await rescoredFleet(context);
    await handle(next1);
    // The three correction batches together in one produce request (well under 4 MiB), after the last batch's.
    expect(sends()).toEqual([[1], [2, 3, 4]]);
    expect(sent[0]).toMatchObject({ batchIndex: 1, lastBatch: true, totalBatches: 5 });
    expect(sent.slice(1).map((batch) => batch.corrections?.length)).toEqual([1_000, 1_000, 500]);
    const corrected = sent.flatMap((batch) => batch.corrections ?? []);
    expect(corrected.map((item) => item.deviceId).sort()).toEqual([...fleet].sort());
    expect(corrected.every((item) => item.vulnerabilities?.criticalCveCount === 1)).toBe(true);
    await cycles.listed('t1', 'c2', {
      totalBatches: 2,
      totalDevices: 5,
      listedAt: sent[0]?.collectedAt ?? '',
    });
    expect((await cycles.get('t1', 'c2'))?.totalBatches).toBe(5);
  });

  it('should keep the correction batches a try sent when the next try, reading a newer export, has fewer', async () => {
    const context = setup();
    const { handle, sent, sends, forgetSent, exported, cycles, storing } = context;
    const { fleet, next1 } = await rescoredFleet(context);
    // The last batch and its three corrections are produced; the process is killed before it stores the
    // export it read.
    storing.fails = 1;
    await expect(handle(next1)).rejects.toThrow('the process was killed');
    expect(sends()).toEqual([[1], [2, 3, 4]]);
    forgetSent();
    // Tried again, it reads the export anew: Microsoft's snapshot changed since, and fewer devices changed.
    exported.rows = new Map(fleet.map((id, i) => [id, [cve('CVE-1', i < 1_500 ? 9.8 : 8.1)]]));
    await handle(next1);
    expect(exported.calls).toBe(3);
    // The count stays at three, and the correction batch this try has no corrections for goes empty: the
    // publisher counts three correction batches, each index once, whichever try's comes first.
    expect(sends()).toEqual([[1], [2, 3, 4]]);
    expect(sent[0]).toMatchObject({ batchIndex: 1, lastBatch: true, totalBatches: 5 });
    expect(sent.slice(1).map((batch) => batch.corrections?.length)).toEqual([1_000, 500, 0]);
    expect(sent[3]).toMatchObject({ batchIndex: 4, lastBatch: false, devices: [] });
    await cycles.listed('t1', 'c2', {
      totalBatches: 2,
      totalDevices: 5,
      listedAt: sent[0]?.collectedAt ?? '',
    });
    expect(await cycles.get('t1', 'c2')).toMatchObject({ totalBatches: 5, correctionBatches: 3 });
  });

  it('should fail the last batch, to be tried again, when an earlier batch is not enriched in time, and correct once it is', async () => {
    const context = setup({ correctionWaitMs: 100 });
    const { handle, sent, exported, bulkCache } = context;
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    exported.rows = new Map([['d4', [cve('CVE-4', 9.1)]]]);
    const [next0, next1] = await nextCycle(context);
    // Batch 0 is late: its corrections sent now would reach the scorer before it, and be dropped.
    await expect(handle(next1)).rejects.toMatchObject({ code: 'CORRECTIONS_WAITING', canRetry: true });
    expect(sent).toEqual([]);
    // The export is kept: the next try does not read it again, and batch 0 is enriched from it.
    expect(await bulkCache.state('t1', 'c2')).toMatchObject({ state: 'ready' });
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c1');
    await handle(next0);
    expect(critical(sent[0])).toEqual({ d1: 0, d2: 0, d3: 0 });
    await handle(next1);
    expect(exported.calls).toBe(2);
    expect(sent.map((batch) => [batch.batchIndex, batch.totalBatches])).toEqual([
      [0, undefined],
      [1, 3],
      [2, undefined],
    ]);
    expect(correctedIds(sent)).toEqual(['d1', 'd4']);
    expect(finalCritical(sent, 'c2')).toEqual({ d1: 0, d2: 0, d3: 0, d4: 1, d5: 0 });
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c2');
  });

  it('should keep the export when the last batch waits for an earlier one on its last attempt: the batch still to come is enriched from it', async () => {
    const context = setup({ correctionWaitMs: 100 });
    const { handle, sent, exported, bulkCache } = context;
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    exported.rows = new Map([['d4', [cve('CVE-4', 9.1)]]]);
    const [next0, next1] = await nextCycle(context);
    // The runner's answer on the batch's last attempt: the last batch is dead-lettered after this try.
    const lastAttempt = (error: unknown): boolean =>
      isHandledAgain(error) && handlerFailureOf(error) !== 'retryable';
    await expect(handle(next1, { handledAgainAfter: lastAttempt })).rejects.toMatchObject({
      code: 'CORRECTIONS_WAITING',
    });
    // Unlike a send that failed, the wait is for a batch of the cycle not enriched yet, which reads the
    // cycle's own export once it is stored: not left unused.
    expect(await bulkCache.state('t1', 'c2')).toMatchObject({ state: 'ready' });
    await handle(next0);
    expect(exported.calls).toBe(2);
    expect(critical(sent[0])).toEqual({ d1: 0, d2: 0, d3: 0 });
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c1');
  });

  it('should send the corrections anyway once the last batch was tried 5 times, when an earlier batch never comes', async () => {
    // An earlier batch dead-lettered without the record, say. The handler's default wait (30 s) would outlast the test.
    const context = setup({ correctionWaitMs: 100 });
    const { handle, sent, exported } = context;
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    exported.rows = new Map([['d4', [cve('CVE-4', 9.1)]]]);
    const [, next1] = await nextCycle(context);
    for (let tried = 1; tried < 5; tried++)
      await expect(handle(next1)).rejects.toMatchObject({ code: 'CORRECTIONS_WAITING' });
    expect(sent).toEqual([]);
    await handle(next1);
    expect(exported.calls).toBe(2);
    expect(sent.map((batch) => batch.batchIndex)).toEqual([1, 2]);
    expect(correctedIds(sent)).toEqual(['d1', 'd4']);
  });

  it('should end the wait for the earlier batches when the one missing is recorded lost', async () => {
    // Longer than the test may run: only the lost record ends the wait.
    const context = setup({ correctionWaitMs: 10 * 60_000 });
    const { handle, sent, exported, cycles } = context;
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    exported.rows = new Map([['d4', [cve('CVE-4', 9.1)]]]);
    const [next0, next1] = await nextCycle(context);
    const last = handle(next1);
    // Batch 0 dead-lettered (its tenant record missing, say), while the last batch waits for it.
    await cycles.lost('t1', next0.cycleId, next0.batchIndex, next0.devices.length, Date.now());
    await last;
    expect(sent.map((batch) => batch.batchIndex)).toEqual([1, 2]);
    expect(correctedIds(sent)).toEqual(['d1', 'd4']);
  });

  it('should read nothing when Microsoft serves the snapshot the latest export was read from, and read again once it changed', async () => {
    const context = setup({ skipUnchanged: true });
    const { handle, sent, exported, bulkCache } = context;
    exported.generatedTime = '2026-01-01T06:00:00Z';
    await firstCycle(context, [
      ['d1', [cve('CVE-1', 9.8)]],
      ['d4', [cve('CVE-4', 9.1)]],
    ]);
    expect(exported).toMatchObject({ calls: 1, probes: 1 });
    const c1 = await bulkCache.latest('t1');
    expect(c1).toMatchObject({ cycleId: 'c1', generatedTime: '2026-01-01T06:00:00Z' });
    // The tenant's admin sees how old Microsoft's data is.
    expect(context.notes.at(-1)).toContain("Microsoft's snapshot of 2026-01-01T06:00:00Z");
    // A first cycle's answer is a snapshot not read before.
    expect([context.snapshots('changed'), context.snapshots('unchanged')]).toEqual([1, 0]);

    // The same snapshot: rows that would change d2 and d4 are not read, and nothing is corrected.
    exported.rows = new Map([['d2', [cve('CVE-2', 9.9)]]]);
    const [next0, next1] = await nextCycle(context);
    await redis.client.pexpire(`${redis.prefix}vuln-bulk-latest:t1`, 60_000);
    await handle(next0);
    await handle(next1);
    expect(exported).toMatchObject({ calls: 1, probes: 2 });
    expect([context.snapshots('changed'), context.snapshots('unchanged')]).toEqual([1, 1]);
    expect(sent.map((batch) => [batch.batchIndex, batch.totalBatches, batch.corrections])).toEqual([
      [0, undefined, undefined],
      [1, 2, undefined],
    ]);
    expect(critical(sent[1])).toEqual({ d4: 1, d5: 0 });
    // Collected when Microsoft answered the question, after the latest export was read.
    expect(Date.parse(sent[1]?.collectedAt ?? '')).toBeGreaterThan(Date.parse(c1?.collectedAt ?? ''));
    // c1 stays the latest, kept for the next cycles again; c2 stored nothing and holds no claim.
    expect(await bulkCache.latest('t1')).toEqual(c1);
    expect(await redis.client.pttl(`${redis.prefix}vuln-bulk-latest:t1`)).toBeGreaterThan(60_000);
    expect(await bulkCache.state('t1', 'c2')).toEqual({ state: 'absent' });

    // A new snapshot: the export is read and its changes corrected, and it becomes the latest with its time.
    exported.generatedTime = '2026-01-01T12:00:00Z';
    sent.length = 0;
    const [third0, third1] = await nextCycle(context, 9, 'c3', '2026-01-01T10:20:00.000Z');
    await handle(third0);
    await handle(third1);
    expect(exported).toMatchObject({ calls: 2, probes: 3 });
    expect([context.snapshots('changed'), context.snapshots('unchanged')]).toEqual([2, 1]);
    expect(correctedIds(sent)).toEqual(['d1', 'd2', 'd4']);
    expect(await bulkCache.latest('t1')).toMatchObject({
      cycleId: 'c3',
      generatedTime: '2026-01-01T12:00:00Z',
    });
  });

  it('should read the export though Microsoft serves the same snapshot when the latest export is gone', async () => {
    const context = setup({ skipUnchanged: true });
    const { handle, sent, exported, bulkCache } = context;
    exported.generatedTime = '2026-01-01T06:00:00Z';
    await firstCycle(context, [['d4', [cve('CVE-4', 9.1)]]]);
    const [next0, next1] = await nextCycle(context);
    await handle(next0);
    await redis.client.del(`${redis.prefix}vuln-bulk:t1:c1`);
    await handle(next1);
    expect(critical(sent[1])).toEqual({ d4: 1, d5: 0 });
    expect(exported.calls).toBe(2);
    // Counted as read, not as unchanged: the same snapshot, but the export it was read into is gone.
    expect([context.snapshots('unchanged'), context.snapshots('gone')]).toEqual([0, 1]);
    // Nothing to compare with: every device the export holds is corrected.
    expect(correctedIds(sent)).toEqual(['d4']);
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c2');
  });

  it('should read the export again once the latest export was read over 6 hours ago, though Microsoft serves the same snapshot', async () => {
    const context = setup({ skipUnchanged: true });
    const { handle, sent, exported, bulkCache } = context;
    exported.generatedTime = '2026-01-01T06:00:00Z';
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    // Read 7 hours before this cycle's clock (10:00): Microsoft regenerates every 6 hours, so the same
    // generatedTime no longer vouches for the same data.
    const c1 = await bulkCache.latest('t1');
    await redis.client.set(
      `${redis.prefix}vuln-bulk-latest:t1`,
      JSON.stringify({ ...c1, collectedAt: '2026-01-01T03:00:00.000Z' }),
    );
    exported.rows = new Map([['d4', [cve('CVE-4', 9.1)]]]);
    const [next0, next1] = await nextCycle(context);
    await handle(next0);
    await handle(next1);
    expect(exported).toMatchObject({ calls: 2, probes: 2 });
    expect([context.snapshots('unchanged'), context.snapshots('stale')]).toEqual([0, 1]);
    expect(correctedIds(sent)).toEqual(['d1', 'd4']);
    expect((await bulkCache.latest('t1'))?.cycleId).toBe('c2');
  });

  it('should read the export, and store it without a snapshot time, when the question gets no answer', async () => {
    const context = setup({ skipUnchanged: true });
    const { handle, sent, exported, bulkCache } = context;
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    expect(exported).toMatchObject({ calls: 1, probes: 1 });
    expect(context.snapshots('unknown')).toBe(1);
    expect(await bulkCache.latest('t1')).not.toHaveProperty('generatedTime');
    // Answered now, but the latest export has no time to compare with: read, and corrected.
    exported.generatedTime = '2026-01-01T06:00:00Z';
    exported.rows = new Map([['d4', [cve('CVE-4', 9.1)]]]);
    const [next0, next1] = await nextCycle(context);
    await handle(next0);
    await handle(next1);
    expect(exported).toMatchObject({ calls: 2, probes: 2 });
    // Answered, but not the snapshot of a latest export that has none.
    expect([context.snapshots('unknown'), context.snapshots('changed')]).toEqual([1, 1]);
    expect(correctedIds(sent)).toEqual(['d1', 'd4']);
    expect(await bulkCache.latest('t1')).toMatchObject({
      cycleId: 'c2',
      generatedTime: '2026-01-01T06:00:00Z',
    });
  });

  it("should correct a device sent as not in the latest export's snapshot once the cycle's own snapshot lists it, also from the stored export", async () => {
    const context = setup();
    const { handle, sent, exported, bulkCache } = context;
    exported.generatedTime = '2026-01-01T06:00:00Z';
    await firstCycle(context, [['d1', [cve('CVE-1', 9.8)]]]);
    // d2 onboarded less than a day before the first snapshot (06:00), over a day before the next one (12:00);
    // d3 after it; neither has a vulnerability.
    exported.generatedTime = '2026-01-01T12:00:00Z';
    const [next0, next1] = await nextCycle(context);
    next0.devices = [
      { id: 'd1' },
      { id: 'd2', firstSeen: '2025-12-31T08:00:00Z' },
      { id: 'd3', firstSeen: '2026-01-01T13:00:00Z' },
    ];
    await handle(next0);
    expect(sent[0]?.devices.map((device) => device.fetchError?.code)).toEqual([
      undefined,
      'NOT_IN_EXPORT_SNAPSHOT',
      'NOT_IN_EXPORT_SNAPSHOT',
    ]);
    await handle(next1);
    expect(sent.map((batch) => [batch.batchIndex, batch.totalBatches])).toEqual([
      [0, undefined],
      [1, 3],
      [2, undefined],
    ]);
    expect(sent[2]?.corrections).toEqual([
      {
        deviceId: 'd2',
        vulnerabilities: {
          criticalCveCount: 0,
          totalCveCount: 0,
          maxCvss: null,
          cvssThreshold: 9,
          topCveIds: [],
        },
      },
    ]);

    // Handled again once the export is stored (see above): the same correction, from the stored export.
    const c1 = await bulkCache.state('t1', 'c1');
    await redis.client.set(
      `${redis.prefix}vuln-bulk-latest:t1`,
      JSON.stringify({
        cycleId: 'c1',
        collectedAt: c1.state === 'ready' ? c1.collectedAt : '',
        cvssThreshold: 9,
        azureTenantId: DIRECTORY_A,
        cloud: 'commercial',
      }),
    );
    const first = sent.slice(1);
    await forgetEnriched(next1);
    sent.length = 0;
    await handle(next1);
    expect(exported.calls).toBe(2);
    expect(sent.map((batch) => batch.corrections)).toEqual(first.map((batch) => batch.corrections));
  });
});
