import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { TenantRecord } from '@urs/contracts';
import { CallHealth, createHttpsAgent, createLocalLimiter, createLocalQuotaGate } from '@urs/defender';
import { silentLogger } from '@urs/logging';
import { errorMessage, isInfrastructureFault } from '@urs/resilience';
import { createSecretSealer } from '@urs/secrets';
import { startSimulator } from '@urs/simulator';
import { Registry } from '@urs/telemetry';
import {
  ReplicaSecretKeyError,
  type SourceProvider,
  type VulnerabilitySource,
  isTenantWideFailure,
} from '../src/sources';
import { FOLD_THREADS } from '../src/export-fold';
import { VulnerabilityFolder } from '../src/summarise';
import {
  type OwnSources,
  type SimApp,
  localSources,
  randomSealer,
  sealedTenant,
  simSources,
} from './handler-support';

describe('createDefenderSources', () => {
  const tenant = sealedTenant();
  const record = (tenantId: string, revision: number): TenantRecord => tenant.record(tenantId, { revision });

  it("should keep a tenant's source while its revision holds and it is asked for, and let it go after an idle hour", () => {
    let clock = 0;
    const { sources, close } = localSources(tenant.sealer, { now: () => clock });
    try {
      const first = sources.forTenant(record('a', 1));
      const other = sources.forTenant(record('b', 1));
      clock = 50 * 60_000;
      expect(sources.forTenant(record('a', 1))).toBe(first);
      // A new revision (a new secret): a new client.
      expect(sources.forTenant(record('a', 2))).not.toBe(first);
      // b was not asked for in more than an hour (a deleted tenant): let go of, with its secret.
      clock = 70 * 60_000;
      const again = sources.forTenant(record('a', 2));
      expect(sources.forTenant(record('b', 1))).not.toBe(other);
      expect(sources.forTenant(record('a', 2))).toBe(again);
    } finally {
      close();
    }
  });

  it("forTenant should fail retryably, as this replica's fault, when its key does not open the tenant's secret", () => {
    // Another URS_SECRET_KEY under the same URS_SECRET_KEY_ID as the registrar's.
    const { sources, close } = localSources(randomSealer());
    try {
      let failure: unknown;
      try {
        sources.forTenant(record('a', 1));
      } catch (error) {
        failure = error;
      }
      expect(failure).toBeInstanceOf(ReplicaSecretKeyError);
      expect(failure).toMatchObject({
        code: 'SECRET_UNREADABLE',
        canRetry: true,
        message: expect.stringMatching(/URS_SECRET_KEY \(URS_SECRET_KEY_ID\)/),
      });
      expect(isTenantWideFailure(failure)).toBe(false);
      // Held by the bus, never dead-lettered: the batch is sound, the replica's key is not.
      expect(isInfrastructureFault(failure)).toBe(true);
    } finally {
      close();
    }
  });

  it("forTenant should fail as the tenant's failure when the secret's key id is held by no key of this process", () => {
    const otherId = createSecretSealer({ activeKeyId: 'k2', keys: new Map([['k2', randomBytes(32)]]) });
    const { sources, close } = localSources(otherId);
    try {
      expect(() => sources.forTenant(record('a', 1))).toThrow(
        expect.objectContaining({ code: 'SECRET_KEY_UNKNOWN', canRetry: false }),
      );
    } finally {
      close();
    }
  });
});

describe('createDefenderSources and a tenant whose API answers slowly', () => {
  const tenant = sealedTenant({ apps: 2 });
  const apps = tenant.apps;
  /** Tenant a's record of `revision`, its secret sealed anew each time (as the registrar re-seals it). */
  const record = (revision: number, app: SimApp): TenantRecord => tenant.record('a', { revision, app });

  async function withSimulator(
    run: (sources: OwnSources, ids: string[], peak: () => number) => Promise<void>,
  ) {
    const sim = await startSimulator({ quotas: false, latency: { meanMs: 250 } });
    tenant.addTo(sim, { size: 10, seed: 7 });
    // Calls slow from 200 ms: a quarter of the request timeout.
    const sources = simSources(sim, tenant.sealer, { requestTimeoutMs: 800 });
    try {
      const ids = sim.machines(tenant.azureTenantId).map((machine) => machine.id);
      await run(sources, ids, () => {
        const peak = sim.stats().peakConcurrencyByTenant[tenant.azureTenantId] ?? 0;
        sim.resetStats();
        return peak;
      });
    } finally {
      sources.close();
      await sim.close();
    }
  }

  it("forTenant should keep the tenant's slow-call cap across a re-seal of its secret, and start a different app afresh", async () => {
    await withSimulator(async ({ sources }, ids, peak) => {
      const first = sources.forTenant(record(1, apps[0]!));
      // Three calls in a row slower than a quarter of the 800 ms timeout: 2 calls in flight at most.
      for (const id of ids.slice(0, 3)) await first.machineVulnerabilities(id);
      peak();

      // The registrar re-sealed the same secret: a new record revision, a new client, the same app.
      const resealed = sources.forTenant(record(2, apps[0]!));
      expect(resealed).not.toBe(first);
      await Promise.all(ids.map((id) => resealed.machineVulnerabilities(id)));
      expect(peak()).toBeLessThanOrEqual(2);

      // Another app of the tenant owes nothing to the first one's calls.
      const other = sources.forTenant(record(3, apps[1]!));
      await Promise.all(ids.map((id) => other.machineVulnerabilities(id)));
      expect(peak()).toBeGreaterThan(2);
    });
  }, 20_000);
});

describe('createDefenderSources and vulnerabilities whose CVSS score cannot be read', () => {
  it('should serve the unreadable rows of both modes at 0 from its start, so the first is an increase', () => {
    const metrics = new Registry({ processMetrics: false });
    const { close } = localSources(randomSealer(), { metrics });
    try {
      const exposed = metrics.expose();
      expect(exposed).toContain('urs_vulnerability_rows_unreadable_total{mode="per-device"} 0\n');
      expect(exposed).toContain('urs_vulnerability_rows_unreadable_total{mode="bulk"} 0\n');
    } finally {
      close();
    }
  });

  it('should count the rows it skips as unreadable, per device and in the export, and fail a device none of whose rows was read', async () => {
    const tenant = sealedTenant();
    const { azureTenantId } = tenant;
    const sim = await startSimulator({ quotas: false });
    tenant.addTo(sim, { size: 2, seed: 7 });
    const [id] = sim.machines(azureTenantId).map((machine) => machine.id) as [string];
    const [cve] = sim.vulnerabilities(azureTenantId, id).length
      ? sim.vulnerabilities(azureTenantId, id)
      : sim.vulnerabilities(azureTenantId, sim.machines(azureTenantId)[1]!.id);
    sim.setVulnerabilities(azureTenantId, id, [
      { ...cve!, id: 'CVE-2024-1', cvssV3: 11 },
      { ...cve!, id: 'CVE-2024-2', cvssV3: -1 },
    ]);
    const metrics = new Registry({ processMetrics: false });
    const { sources, close } = simSources(sim, tenant.sealer, { metrics });
    const unreadable = (mode: string): number =>
      metrics.counter('urs_vulnerability_rows_unreadable_total', '').get({ mode });
    try {
      const source = sources.forTenant(tenant.record('a'));
      await expect(source.machineVulnerabilities(id)).rejects.toMatchObject({
        code: 'DEFENDER_UNREADABLE_RECORDS',
      });
      expect(unreadable('per-device')).toBe(2);
      await source.bulkVulnerabilities(() => undefined);
      expect(unreadable('bulk')).toBe(2);
    } finally {
      close();
      await sim.close();
    }
  }, 20_000);
});

describe('createDefenderSources with the export folded on a thread', () => {
  it('should fold exports read at once on one thread, the others on the main thread without waiting for it', async () => {
    const sealer = randomSealer();
    const sim = await startSimulator({ quotas: false });
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    const metrics = new Registry({ processMetrics: false });
    // Compiled, as the process runs it: the fold thread loads compiled code (`npm run build` comes first).
    const compiled = (await import(join(__dirname, '../dist/sources.js'))) as typeof import('../src/sources');
    const sources = compiled.createDefenderSources({
      sealer,
      limiter: createLocalLimiter(),
      quota: createLocalQuotaGate(),
      httpsAgent: agent,
      overrides: { authorityHost: sim.baseUrl, apiBase: sim.baseUrl },
      logger: silentLogger,
      metrics,
      foldThread: true,
    });
    const tenant = (tenantId: string, size: number): VulnerabilitySource => {
      const sealed = sealedTenant({ sealer });
      sealed.addTo(sim, { size, seed: 3 });
      return sources.forTenant(sealed.record(tenantId));
    };
    const folds = (thread: string): number =>
      metrics.counter('urs_bulk_export_folds_total', '').get({ thread });
    try {
      const tenants = [tenant('a', 40), tenant('b', 30), tenant('c', 20)];
      /** Each tenant's export folded row by row, as without a fold thread. */
      const expected = await Promise.all(
        tenants.map(async (source) => {
          const folder = new VulnerabilityFolder();
          await source.bulkVulnerabilities((device, vulnerability) => folder.add(device, vulnerability));
          return [...folder.summaries(7)];
        }),
      );
      // Three tenants' exports read at once (their partitions on one replica): the process's heaps are sized
      // for one fold thread (deploy/k8s/vuln-fetcher.yaml), so the others fold on the main thread at once.
      const folded = await Promise.all(tenants.map((source) => source.bulkFold!()));
      expect(folded.map((fold) => [...fold.summaries(7)])).toEqual(expected);
      expect({ fold: folds('fold'), main: folds('main') }).toEqual({
        fold: FOLD_THREADS,
        main: 3 - FOLD_THREADS,
      });
      // The thread given back: the next export read alone folds on it again.
      expect([...(await tenants[2]!.bulkFold!()).summaries(7)]).toEqual(expected[2]);
      expect(folds('fold')).toBe(FOLD_THREADS + 1);
    } finally {
      sources.close();
      agent.destroy();
      await sim.close();
    }
  }, 20_000);
});

describe('createDefenderSources and a tenant held back by its quota', () => {
  const tenant = sealedTenant();

  async function withHeldBackTenant(
    blockMs: number,
    maxQuotaWaitMs: number | undefined,
    run: (source: ReturnType<SourceProvider['forTenant']>, id: string) => Promise<void>,
  ) {
    const sim = await startSimulator({ quotas: false });
    const { azureTenantId } = tenant;
    tenant.addTo(sim, { size: 1, seed: 7 });
    const quota = createLocalQuotaGate();
    // Another call of the tenant drew a 429 whose Retry-After holds every call of the endpoint back.
    await quota.block({ azureTenantId, clientId: tenant.apps[0]!.clientId }, 'vulnerabilities', blockMs);
    const { sources, close } = simSources(sim, tenant.sealer, {
      quota,
      ...(maxQuotaWaitMs === undefined ? {} : { maxQuotaWaitMs }),
    });
    try {
      await run(sources.forTenant(tenant.record('a')), sim.machines(azureTenantId)[0]!.id);
    } finally {
      close();
      await sim.close();
    }
  }

  it('machineVulnerabilities should fail THROTTLED at once, not retried in the call, when the quota holds it back for longer than a few minutes', async () => {
    await withHeldBackTenant(3_600_000, undefined, async (source, id) => {
      // The signal only ends a call that would wait for the block: it must fail before, on its own.
      await expect(source.machineVulnerabilities(id, AbortSignal.timeout(5_000))).rejects.toMatchObject({
        code: 'DEFENDER_THROTTLED',
        canRetry: false,
        retryAfterMs: expect.any(Number),
        details: expect.objectContaining({ quotaWaitMs: expect.any(Number) }),
      });
    });
  }, 20_000);

  it('machineVulnerabilities should fail THROTTLED at once when the quota holds it back for longer than the wait it is given', async () => {
    await withHeldBackTenant(60_000, 1_000, async (source, id) => {
      await expect(source.machineVulnerabilities(id, AbortSignal.timeout(5_000))).rejects.toMatchObject({
        code: 'DEFENDER_THROTTLED',
        canRetry: false,
      });
    });
  }, 20_000);

  it('machineVulnerabilities should wait out a block shorter than the wait it is given', async () => {
    await withHeldBackTenant(300, 1_000, async (source, id) => {
      await expect(source.machineVulnerabilities(id)).resolves.toEqual(expect.any(Array));
    });
  }, 20_000);
});

describe('createDefenderSources and a degraded tenant waiting for a place among the degraded tenants’ calls', () => {
  const tenant = sealedTenant();
  const { azureTenantId } = tenant;

  it('machineVulnerabilities should fail THROTTLED, not retried in the call, once it waited maxDegradedWaitMs for a place, naming the places', async () => {
    const sim = await startSimulator({ quotas: false });
    tenant.addTo(sim, { size: 1, seed: 7 });
    // The tenant's API never answers: its first call, out of time, makes it degraded, and its retry waits for
    // one of the process's 2 places, both held by other degraded tenants' calls that hang for the whole test.
    sim.setFaults(azureTenantId, { timeoutRate: 1 });
    const elsewhere = ['x', 'y'].map((id) => new CallHealth(id));
    for (const health of elsewhere) {
      expect(health.start()).toBe(true);
      health.leave('failed', 'no answer within 30 s');
      expect(health.start()).toBe(true);
    }
    const { sources, close } = simSources(sim, tenant.sealer, {
      requestTimeoutMs: 1_000,
      maxDegradedWaitMs: 200,
    });
    try {
      const id = sim.machines(azureTenantId)[0]!.id;
      // The signal only ends a call that would wait on: it must fail before, on its own.
      const failed = await source(sources)
        .machineVulnerabilities(id, AbortSignal.timeout(8_000))
        .then(
          () => undefined,
          (error: unknown) => error,
        );
      expect(failed).toMatchObject({ code: 'DEFENDER_THROTTLED', canRetry: false });
      expect(errorMessage(failed)).toMatch(
        /was not sent: it waited 200 ms in all, as long as it may, for one of the 2 places kept for the calls of tenants whose last call failed slowly/,
      );
    } finally {
      for (const health of elsewhere) health.leave('answered');
      close();
      await sim.close();
    }

    function source(provider: SourceProvider): VulnerabilitySource {
      return provider.forTenant(tenant.record('failing'));
    }
  }, 20_000);
});
