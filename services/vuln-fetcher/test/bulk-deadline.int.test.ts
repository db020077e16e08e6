import type { DeviceBatch, TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createAnsweredCalls, createBulkVulnerabilityCache, createCycleStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { inboundMessage, testRedisPerTest } from '@urs/testkit';
import { createEnrichHandler } from '../src/handler';
import type { SourceProvider } from '../src/sources';
import { capturingPublisher } from './handler-support';

// A bulk cycle whose export read outlasts the cycle's deadline (Microsoft's 30 export calls a minute make a
// large fleet's read longer than a 10-minute interval), against a real Redis: the cycle store is the one
// the publisher's deadline sweep reads (`overdue`). Times are scaled down: a 300 ms deadline and claim,
// a 1.5 s read.

const record = {
  tenantId: 't1',
  revision: 1,
  defender: { pollIntervalMinutes: 10 },
} as unknown as TenantRecord;

const READ_MS = 1_500;
const DEADLINE_MS = 300;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('a bulk cycle whose export read outlasts its deadline', () => {
  const redis = testRedisPerTest();

  function setup(options: { bulkCycleMaxMs: number; exportLast?: boolean }) {
    const { sent, publisher } = capturingPublisher();
    const sources: SourceProvider = {
      forTenant: () => ({
        machineVulnerabilities: async () => [],
        bulkVulnerabilities: async (onRow) => {
          await sleep(READ_MS);
          onRow('d4', { id: 'CVE-9', cvssV3: 9.9 });
        },
      }),
      forget: () => undefined,
      close: () => undefined,
    };
    const cycles = createCycleStore(redis.client, redis.prefix);
    const handler = createEnrichHandler({
      tenants: { get: async () => record, updatePollingStatus: async () => true },
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
      bulkClaimMs: DEADLINE_MS,
      bulkCycleMaxMs: options.bulkCycleMaxMs,
      bulkPollMs: 20,
    });
    /** Begins the cycle as the poller does, with a deadline DEADLINE_MS ahead, and hands both its batches in at once. */
    async function cycle(cycleId: string): Promise<unknown> {
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
    const overdue = async (): Promise<string[]> =>
      (await cycles.overdue(new Date())).map((open) => open.cycleId);
    return { cycle, sent, overdue };
  }

  it('should stay open past its deadline while its export is read, and enrich every batch from it', async () => {
    const { cycle, sent, overdue } = setup({ bulkCycleMaxMs: 60_000 });
    const handled = cycle('c1');
    await sleep(DEADLINE_MS * 3);
    // Past the deadline, mid-read: the publisher's sweep would close it as partial, every device failed.
    const midRead = await overdue();
    await handled;
    expect(midRead).toEqual([]);
    // The rest of the cycle (scoring, the summary) has a claim period after the read.
    expect(await overdue()).toEqual([]);
    const waited = sent.find((batch) => batch.batchIndex === 1);
    expect(waited?.devices[0]?.vulnerabilities?.criticalCveCount).toBe(1);
    expect(sent.flatMap((batch) => batch.devices.map((device) => device.fetchError?.code ?? null))).toEqual([
      null,
      null,
      null,
    ]);
    await sleep(DEADLINE_MS * 2);
    expect(await overdue()).toEqual(['c1']);
  });

  it('should be held open no longer than URS_BULK_CYCLE_MAX_MS from its start', async () => {
    const { cycle, overdue } = setup({ bulkCycleMaxMs: DEADLINE_MS * 2 });
    const handled = cycle('c1');
    await sleep(DEADLINE_MS * 3);
    const midRead = await overdue();
    await handled;
    expect(midRead).toEqual(['c1']);
  });

  it("should hold the tenant's next cycle open while it waits behind the previous cycle's read", async () => {
    const { cycle, sent, overdue } = setup({ bulkCycleMaxMs: 60_000, exportLast: true });
    // The first bulk cycle (no latest export) reads its export first; the poller starts the next at its
    // interval, the read still going on.
    const first = cycle('c1');
    await sleep(DEADLINE_MS);
    const next = cycle('c2');
    await sleep(DEADLINE_MS * 3);
    const midRead = await overdue();
    await Promise.all([first, next]);
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
