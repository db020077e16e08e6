import type { Publisher } from '@urs/bus';
import type { DeviceBatch, EnrichedBatch, TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createBulkVulnerabilityCache, createCycleStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { inboundMessage, testRedisPerTest } from '@urs/testkit';
import { createEnrichHandler } from '../src/handler';
import type { SourceProvider } from '../src/sources';
import type { VulnerabilityLike } from '../src/summarise';

// A bulk cycle that reads its export last, against a real Redis: the cache of exports and the cycle store
// are the ones the services share; Defender is a fake export of rows.

const record = {
  tenantId: 't1',
  revision: 1,
  defender: { pollIntervalMinutes: 10 },
} as unknown as TenantRecord;

const cve = (id: string, cvssV3: number): VulnerabilityLike => ({ id, cvssV3 });

/** A cycle of two batches: d1–d3, then d4–d5 with the totals. */
function cycleBatches(cycleId: string, startedAt: string): [DeviceBatch, DeviceBatch] {
  const header = {
    schemaVersion: 1 as const,
    tenantId: 't1',
    cycleId,
    cycleStartedAt: startedAt,
    vulnerabilityMode: 'bulk' as const,
    cvssThreshold: 9,
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

  function setup() {
    const sent: EnrichedBatch[] = [];
    const publisher: Publisher = {
      send: async (_topic, _contract, messages) => {
        for (const m of messages) sent.push(m.value as EnrichedBatch);
      },
      sendRaw: async () => undefined,
      close: async () => undefined,
    };
    /** The rows the next export answers, by device. */
    const exported = { rows: new Map<string, VulnerabilityLike[]>(), calls: 0, fails: false };
    const sources: SourceProvider = {
      forTenant: () => ({
        machineVulnerabilities: async () => [],
        bulkVulnerabilities: async (onRow) => {
          exported.calls++;
          if (exported.fails) throw new Error('the export failed');
          for (const [deviceId, rows] of exported.rows) for (const row of rows) onRow(deviceId, row);
        },
      }),
      close: () => undefined,
    };
    const bulkCache = createBulkVulnerabilityCache(redis.client, redis.prefix);
    const cycles = createCycleStore(redis.client, redis.prefix);
    let clock = Date.parse('2026-01-01T10:00:05.000Z');
    const handler = createEnrichHandler({
      tenants: { get: async () => record, updateStatus: async () => undefined },
      sources,
      bulkCache,
      cycles,
      exportLast: true,
      publisher,
      topic: 'urs.devices-enriched',
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
      concurrency: 2,
      bulkWaitMs: 1_000,
      bulkClaimMs: 1_000,
      bulkPollMs: 5,
      now: () => new Date((clock += 1000)),
    });
    const handle = (batch: DeviceBatch) =>
      handler(inboundMessage(batch, { topic: 'urs.device-batches', key: batch.tenantId }));
    return { handle, sent, exported, bulkCache, cycles };
  }

  const critical = (batch: EnrichedBatch | undefined) =>
    Object.fromEntries(
      (batch?.devices ?? []).map((device) => [device.machine.id, device.vulnerabilities?.criticalCveCount]),
    );

  it("should enrich at once from the latest export, then correct the devices the cycle's own export changed", async () => {
    const { handle, sent, exported, bulkCache, cycles } = setup();
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
    const [next0, next1] = cycleBatches('c2', '2026-01-01T10:10:00.000Z');
    await cycles.begin({
      tenantId: 't1',
      cycleId: 'c2',
      startedAt: next0.cycleStartedAt,
      // The cycle's keys expire a day after its deadline: a deadline from now keeps them for the test.
      deadlineAt: new Date(Date.now() + 600_000).toISOString(),
    });
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
  });

  it("should leave the devices with the latest export's vulnerabilities when the cycle's own export fails", async () => {
    const { handle, sent, exported, bulkCache } = setup();
    exported.rows = new Map([['d1', [cve('CVE-1', 9.8)]]]);
    const [first0, first1] = cycleBatches('c1', '2026-01-01T10:00:00.000Z');
    await handle(first0);
    await handle(first1);
    sent.length = 0;
    exported.fails = true;
    const [next0, next1] = cycleBatches('c2', '2026-01-01T10:10:00.000Z');
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
});
