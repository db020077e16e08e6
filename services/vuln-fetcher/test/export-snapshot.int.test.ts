import { toDeviceRecord, type DeviceBatch, type DeviceRecord, type EnrichedBatch } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { cveCatalog, startSimulator, type Simulator } from '@urs/simulator';
import { createAnsweredCalls, createBulkVulnerabilityCache, createCycleStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { inboundMessage, testRedisPerTest } from '@urs/testkit';
import { createEnrichHandler } from '../src/handler';
import { ASSESSMENT_MARGIN_MS } from '@urs/contracts';
import { type OwnSources, capturingPublisher, sealedTenant, simSources } from './handler-support';

// Bulk cycles against the simulator, whose export snapshot is kept for an hour as Microsoft keeps one for up to
// six: a device onboarded since the snapshot was generated is not in it, and is not scored as clear of CVEs.

describe("bulk cycles and the export's snapshot", () => {
  const redis = testRedisPerTest();
  let sim: Simulator;
  const tenant = sealedTenant();
  let sources: OwnSources | undefined;

  beforeAll(async () => {
    sim = await startSimulator({ quotas: false });
  });

  afterEach(() => {
    sources?.close();
    sources = undefined;
    sim.removeTenant(tenant.azureTenantId);
  });

  afterAll(async () => {
    await sim?.close();
  });

  /** The tenant in the simulator, its export snapshot generated at most once in `exportSnapshotMs`. */
  function setup(exportSnapshotMs = 3_600_000) {
    tenant.addTo(sim, { size: 3, seed: 7, exportSnapshotMs });
    const record = tenant.record('snap-tenant', { pollIntervalMinutes: 10 });
    sources = simSources(sim, tenant.sealer, { requestTimeoutMs: 5_000 });
    const { sent, publisher } = capturingPublisher();
    const cycles = createCycleStore(redis.client, redis.prefix);
    // As the vuln-fetcher runs by default: the export read last, an unchanged snapshot not read again.
    const handler = createEnrichHandler({
      tenants: { lookup: async () => ({ record, rebuilt: true }), updatePollingStatus: async () => true },
      sources: sources.sources,
      bulkCache: createBulkVulnerabilityCache(redis.client, redis.prefix),
      answers: createAnsweredCalls(redis.client, redis.prefix),
      cycles,
      exportLast: true,
      skipUnchangedExport: true,
      publisher,
      topic: 'urs.devices-enriched',
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
      concurrency: 2,
      bulkWaitMs: 5_000,
      bulkClaimMs: 5_000,
      bulkPollMs: 5,
    });
    /** Runs a bulk cycle of these batches of devices, as the poller lists them now. */
    async function cycle(cycleId: string, batches: string[][]): Promise<EnrichedBatch[]> {
      const listed = new Map(sim.machines(tenant.azureTenantId).map((m) => [m.id, toDeviceRecord(m)]));
      const startedAt = new Date().toISOString();
      await cycles.begin({
        tenantId: record.tenantId,
        cycleId,
        startedAt,
        deadlineAt: new Date(Date.now() + 600_000).toISOString(),
      });
      const total = batches.reduce((sum, ids) => sum + ids.length, 0);
      sent.length = 0;
      for (const [batchIndex, ids] of batches.entries()) {
        const last = batchIndex === batches.length - 1;
        const batch: DeviceBatch = {
          schemaVersion: 1,
          tenantId: record.tenantId,
          cycleId,
          cycleStartedAt: startedAt,
          batchIndex,
          lastBatch: last,
          ...(last ? { totalBatches: batches.length, totalDevices: total } : {}),
          vulnerabilityMode: 'bulk',
          cvssThreshold: 9,
          devices: ids.map((id) => listed.get(id) as DeviceRecord),
        };
        await handler(inboundMessage(batch, { topic: 'urs.device-batches', key: batch.tenantId }));
      }
      return [...sent];
    }
    return { cycle };
  }

  /** Each device's critical CVE count, or its fetch error's code when it has none. */
  const outcome = (batches: EnrichedBatch[]): Record<string, number | string | undefined> =>
    Object.fromEntries(
      batches.flatMap((batch) =>
        batch.devices.map((device) => [
          device.machine.id,
          device.vulnerabilities?.criticalCveCount ?? device.fetchError?.code,
        ]),
      ),
    );

  const critical = cveCatalog().find((entry) => (entry.vulnerability.cvssV3 ?? 0) >= 9.5)?.vulnerability;

  /** Each corrected device's critical CVE count, or its fetch error's code when it has none. */
  const corrected = (batches: EnrichedBatch[]): Record<string, number | string | undefined> =>
    Object.fromEntries(
      batches.flatMap((batch) =>
        (batch.corrections ?? []).map((item) => [
          item.deviceId,
          item.vulnerabilities?.criticalCveCount ?? item.fetchError?.code,
        ]),
      ),
    );

  /** A CVE of the catalog with this CVSS score as the export sends it (11: unreadable). */
  const scored = (id: string, cvssV3: number) => {
    if (!critical) throw new Error('the catalog has no critical CVE');
    return { ...critical, id, cvssV3 };
  };

  it('should pass a device onboarded since the snapshot on without vulnerabilities, not as clear', async () => {
    const { cycle } = setup();
    const [m0, m1, m2] = sim.machines(tenant.azureTenantId).map((m) => m.id) as [string, string, string];
    const first = outcome(await cycle('c1', [[m0, m1], [m2]]));
    expect(Object.keys(first).sort()).toEqual([m0, m1, m2].sort());

    // Two devices onboarded since the snapshot, each with a critical CVE Microsoft's next snapshot will list.
    if (!critical) throw new Error('the catalog has no critical CVE');
    const firstSeen = new Date().toISOString();
    const [n1, n2] = sim.addMachines(tenant.azureTenantId, [
      { id: 'a'.repeat(40), onboardingStatus: 'Onboarded', firstSeen, lastSeen: firstSeen },
      { id: 'b'.repeat(40), onboardingStatus: 'Onboarded', firstSeen, lastSeen: firstSeen },
    ]) as [string, string];
    sim.setVulnerabilities(tenant.azureTenantId, n1, [critical]);
    sim.setVulnerabilities(tenant.azureTenantId, n2, [critical]);

    // The first batch from the latest export, the last from the snapshot Microsoft still serves (unchanged).
    const sent = await cycle('c2', [
      [m0, n1],
      [m1, m2, n2],
    ]);
    const second = outcome(sent);
    expect(second).toEqual({ ...first, [n1]: 'NOT_IN_EXPORT_SNAPSHOT', [n2]: 'NOT_IN_EXPORT_SNAPSHOT' });
    expect(sent.some((batch) => batch.corrections !== undefined)).toBe(false);
    // c2 is done with c1's export, which it pinned: the next export replacing it lets it go after an interval.
    expect(await redis.client.smembers(`${redis.prefix}vuln-bulk-pinned:snap-tenant:c1`)).toEqual([]);
  });

  it("should correct a device passed on as not in the latest export's snapshot once the cycle's own snapshot lists it, with or without CVEs", async () => {
    const snapshotMs = 1_000;
    const { cycle } = setup(snapshotMs);
    const [m0, m1, m2] = sim.machines(tenant.azureTenantId).map((m) => m.id) as [string, string, string];
    const first = outcome(await cycle('c1', [[m0, m1], [m2]]));

    // Onboarded since c1's snapshot, one with a critical CVE; one without vulnerabilities, first seen a day
    // before now: less than a day before c1's snapshot (maybe not assessed in it), a day or more before the next.
    if (!critical) throw new Error('the catalog has no critical CVE');
    const now = Date.now();
    const firstSeen = new Date(now).toISOString();
    const aDayAgo = new Date(now - ASSESSMENT_MARGIN_MS).toISOString();
    const [clear, exposed] = sim.addMachines(tenant.azureTenantId, [
      { id: 'c'.repeat(40), onboardingStatus: 'Onboarded', firstSeen: aDayAgo, lastSeen: firstSeen },
      { id: 'd'.repeat(40), onboardingStatus: 'Onboarded', firstSeen, lastSeen: firstSeen },
    ]) as [string, string];
    sim.setVulnerabilities(tenant.azureTenantId, exposed, [critical]);
    // Microsoft generates the next snapshot, which the cycle's own export (read after its last batch) is.
    await new Promise((resolve) => setTimeout(resolve, snapshotMs + 100));

    // Both come in the first batch, enriched from c1's export; the last batch reads the new snapshot.
    const sent = await cycle('c2', [
      [m0, clear, exposed],
      [m1, m2],
    ]);
    expect(outcome(sent)).toEqual({
      ...first,
      [clear]: 'NOT_IN_EXPORT_SNAPSHOT',
      [exposed]: 'NOT_IN_EXPORT_SNAPSHOT',
    });
    // The new snapshot lists both: neither stays without vulnerabilities for the cycle.
    expect(corrected(sent)).toEqual({ [clear]: 0, [exposed]: 1 });
    const last = sent.find((batch) => batch.lastBatch);
    expect(last?.totalBatches).toBe(2 + sent.filter((batch) => batch.corrections !== undefined).length);
  });

  it('should pass a device none of whose export rows could be read on without vulnerabilities, also from the stored and the latest export', async () => {
    const { cycle } = setup();
    const [m0, m1, m2] = sim.machines(tenant.azureTenantId).map((m) => m.id) as [string, string, string];
    // m0's rows all have a score out of range; m1 has one readable critical CVE besides one unreadable.
    sim.setVulnerabilities(tenant.azureTenantId, m0, [scored('CVE-2024-1', 11), scored('CVE-2024-2', 11)]);
    sim.setVulnerabilities(tenant.azureTenantId, m1, [scored('CVE-2024-1', 11), scored('CVE-2024-3', 9.8)]);
    sim.setVulnerabilities(tenant.azureTenantId, m2, []);
    // The snapshot the cycles read holds them (changes wait for the next one).
    sim.generateExport(tenant.azureTenantId);
    const expected = { [m0]: 'DEFENDER_UNREADABLE_RECORDS', [m1]: 1, [m2]: 0 };
    // The tenant's first bulk cycle reads its export first: both batches read it back from Redis.
    expect(outcome(await cycle('c1', [[m0], [m1, m2]]))).toEqual(expected);
    // The next, of the same snapshot: enriched from the latest export, which is not read again.
    expect(outcome(await cycle('c2', [[m0, m1], [m2]]))).toEqual(expected);
  });

  it('should correct a device whose export rows can no longer be read to no vulnerabilities, and back', async () => {
    const snapshotMs = 1_000;
    const { cycle } = setup(snapshotMs);
    const [m0, m1, m2] = sim.machines(tenant.azureTenantId).map((m) => m.id) as [string, string, string];
    sim.setVulnerabilities(tenant.azureTenantId, m0, [scored('CVE-2024-3', 9.8)]);
    sim.generateExport(tenant.azureTenantId);
    expect(outcome(await cycle('c1', [[m0], [m1, m2]]))[m0]).toBe(1);

    sim.setVulnerabilities(tenant.azureTenantId, m0, [scored('CVE-2024-3', 11)]);
    await new Promise((resolve) => setTimeout(resolve, snapshotMs + 100));
    // m0 comes first, from c1's export; the cycle's own export, read by the last batch, corrects it.
    const second = await cycle('c2', [[m0], [m1, m2]]);
    expect(outcome(second)[m0]).toBe(1);
    expect(corrected(second)).toEqual({ [m0]: 'DEFENDER_UNREADABLE_RECORDS' });

    sim.setVulnerabilities(tenant.azureTenantId, m0, [scored('CVE-2024-3', 9.8)]);
    await new Promise((resolve) => setTimeout(resolve, snapshotMs + 100));
    const third = await cycle('c3', [[m0], [m1, m2]]);
    expect(outcome(third)[m0]).toBe('DEFENDER_UNREADABLE_RECORDS');
    expect(corrected(third)).toEqual({ [m0]: 1 });
  });
});
