import type { DeviceBatch, TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createAnsweredCalls, createBulkVulnerabilityCache, createCycleStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { inboundMessage, testRedisPerTest, waitFor } from '@urs/testkit';
import { createEnrichHandler } from '../src/handler';
import type { SourceProvider } from '../src/sources';
import { capturingPublisher } from './handler-support';

// A bulk cycle whose export read outlasts the cycle's deadline (Microsoft's 30 export calls a minute make a
// large fleet's read longer than a 10-minute interval), against a real Redis: the cycle store is the one
// the publisher's deadline sweep reads (`overdue`). Times are scaled down to a 4 s deadline and a 6 s claim
// (renewed every 2 s, and a waiting cycle held open 2 s into its wait), which leave a stalled machine seconds
// to spare; the read lasts until the test ends it.

const record = {
  tenantId: 't1',
  revision: 1,
  defender: {
    pollIntervalMinutes: 10,
    azureTenantId: '0a0a0a0a-0000-4000-8000-00000000000a',
    cloud: 'commercial',
  },
} as unknown as TenantRecord;

const DEADLINE_MS = 4_000;
const CLAIM_MS = 6_000;

/** Until the clock has passed `atMs`. */
const until = (atMs: number): Promise<unknown> =>
  waitFor(() => Date.now() > atMs, { timeoutMs: atMs - Date.now() + 10_000 });

describe('a bulk cycle whose export read outlasts its deadline', () => {
  const redis = testRedisPerTest();
  /** Ends the export reads (those begun, and any to come). */
  let endReads = (): void => undefined;
  afterEach(() => endReads());

  function setup(options: { bulkCycleMaxMs: number; exportLast?: boolean }) {
    const { sent, publisher } = capturingPublisher();
    let reads = 0;
    const readsEnd = new Promise<void>((resolve) => (endReads = resolve));
    const sources: SourceProvider = {
      forTenant: () => ({
        machineVulnerabilities: async () => [],
        bulkVulnerabilities: async (onRow) => {
          reads++;
          await readsEnd;
          onRow('d4', { id: 'CVE-9', cvssV3: 9.9 });
        },
      }),
      forget: () => undefined,
      close: () => undefined,
    };
    const cycles = createCycleStore(redis.client, redis.prefix);
    const handler = createEnrichHandler({
      tenants: { lookup: async () => ({ record, rebuilt: true }), updatePollingStatus: async () => true },
      sources,
      bulkCache: createBulkVulnerabilityCache(redis.client, redis.prefix),
      answers: createAnsweredCalls(redis.client, redis.prefix),
      cycles,
      exportLast: options.exportLast ?? false,
      publisher,
      topic: 'urs.devices-enriched',
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
      concurrency: 2,
      bulkWaitMs: 500,
      bulkClaimMs: CLAIM_MS,
      bulkCycleMaxMs: options.bulkCycleMaxMs,
      bulkPollMs: 20,
    });
    /** Begins the cycle as the poller does, with a deadline DEADLINE_MS ahead, and hands both its batches in at once. */
    async function handle(cycleId: string): Promise<unknown> {
      const startedMs = Date.now();
      const startedAt = new Date(startedMs).toISOString();
      const deadlineAt = new Date(startedMs + DEADLINE_MS).toISOString();
      await cycles.begin({ tenantId: 't1', cycleId, startedAt, deadlineAt });
      const header = {
        schemaVersion: 1 as const,
        tenantId: 't1',
        cycleId,
        cycleStartedAt: startedAt,
        vulnerabilityMode: 'bulk' as const,
        cvssThreshold: 9,
      };
      const batches: DeviceBatch[] = [
        { ...header, batchIndex: 0, lastBatch: false, devices: [{ id: 'd1' }, { id: 'd2' }] },
        {
          ...header,
          batchIndex: 1,
          lastBatch: true,
          totalBatches: 2,
          totalDevices: 3,
          devices: [{ id: 'd4' }],
        },
      ];
      // The first reads the export, the second waits for it.
      return Promise.all(
        batches.map((batch) =>
          handler(inboundMessage(batch, { topic: 'urs.device-batches', key: batch.tenantId })),
        ),
      );
    }
    /** The cycle begun now, handled; `begun` is no earlier than its start. */
    function cycle(cycleId: string): { handled: Promise<unknown>; begun: number } {
      const handled = handle(cycleId);
      return { handled, begun: Date.now() };
    }
    /** The cycles the publisher's sweep would close at `at`. */
    const overdue = async (at = Date.now()): Promise<string[]> =>
      (await cycles.overdue(new Date(at))).map((open) => open.cycleId);
    return { cycle, sent, overdue, reads: () => reads };
  }

  it('should stay open past its deadline while its export is read, and enrich every batch from it', async () => {
    const { cycle, sent, overdue, reads } = setup({ bulkCycleMaxMs: 60_000 });
    const { handled, begun } = cycle('c1');
    await waitFor(() => reads() === 1);
    await until(begun + CLAIM_MS + 2_000);
    // Past the deadline, mid-read, and past the claim period it was first held open for (renewed since): the
    // publisher's sweep would close it as partial, every device failed.
    expect(await overdue()).toEqual([]);
    endReads();
    await handled;
    // The rest of the cycle (scoring, the summary) has a claim period after the read, and no longer.
    expect(await overdue()).toEqual([]);
    expect(await overdue(Date.now() + CLAIM_MS + 5_000)).toEqual(['c1']);
    const waited = sent.find((batch) => batch.batchIndex === 1);
    expect(waited?.devices[0]?.vulnerabilities?.criticalCveCount).toBe(1);
    expect(sent.flatMap((batch) => batch.devices.map((device) => device.fetchError?.code ?? null))).toEqual([
      null,
      null,
      null,
    ]);
  });

  it('should be held open no longer than URS_BULK_CYCLE_MAX_MS from its start', async () => {
    // Past its deadline, the cycle's cap comes while a claim period still lies ahead of the read.
    const capMs = DEADLINE_MS + 1_000;
    const { cycle, overdue, reads } = setup({ bulkCycleMaxMs: capMs });
    const { handled, begun } = cycle('c1');
    await waitFor(() => reads() === 1);
    await until(begun + capMs);
    expect(await overdue()).toEqual(['c1']);
    endReads();
    await handled;
  });

  it("should hold the tenant's next cycle open while it waits behind the previous cycle's read", async () => {
    const { cycle, sent, overdue, reads } = setup({ bulkCycleMaxMs: 60_000, exportLast: true });
    // The first bulk cycle (no latest export) reads its export first; the poller starts the next at its
    // interval, the read still going on.
    const first = cycle('c1');
    await waitFor(() => reads() === 1);
    const next = cycle('c2');
    await until(next.begun + DEADLINE_MS);
    const midRead = await overdue();
    endReads();
    await Promise.all([first.handled, next.handled]);
    expect(midRead).toEqual([]);
    // c1 ended a claim period after its read; c2 read its own export last, then had a claim period too.
    expect(await overdue()).not.toContain('c2');
    expect(
      sent
        .filter((batch) => batch.cycleId === 'c2')
        .flatMap((batch) => batch.devices.map((d) => d.fetchError)),
    ).toEqual([undefined, undefined, undefined]);
  });
});
