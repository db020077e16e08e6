import type { TenantRecord } from '@urs/contracts';
import { createHttpsAgent, createLocalLimiter } from '@urs/defender';
import { type Simulator, startSimulator } from '@urs/simulator';
import { inboundMessage } from '@urs/testkit';
import { runCycle } from '../src/cycle';
import type { DefenderGateway } from '../src/defender';
import { createTenantTable, type TenantTable } from '../src/tenant-table';
import { fitAfterTaking, sealer, unsentCycleDeps } from './support/cycle';
import { simGateway, simRecord, simTenant } from './support/sim-gateway';

// Microsoft counts the per-device quota (1,500 calls an hour) per app and Entra tenant: two tenants registered
// with one app, polled hourly, have 600 calls each (1,200 with the headroom, halved), not 1,200 each.
describe('poller: tenants registered with one Entra app share its quota', () => {
  let sim: Simulator;
  let gateway: DefenderGateway;
  let limiter: ReturnType<typeof createLocalLimiter>;
  let agent: ReturnType<typeof createHttpsAgent>;
  const acme = simTenant('acme');

  beforeEach(async () => {
    sim = await startSimulator({ quotas: false });
    sim.addTenant({
      azureTenantId: acme.azureTenantId,
      apps: [{ clientId: acme.clientId, clientSecret: acme.secret }],
      fleet: { size: 1_000, seed: 7 },
    });
    agent = createHttpsAgent({ extraCa: sim.caPem });
    limiter = createLocalLimiter();
    gateway = simGateway(sim, agent, limiter, { requestTimeoutMs: 5_000 });
  });

  afterEach(async () => {
    gateway?.close();
    await limiter.close();
    agent?.destroy();
    await sim?.close();
  });

  /** acme-eu, registered with acme's app (its ids in upper case), enabled or not, at `revision`. */
  const acmeEu = (enabled: boolean, revision = 1): TenantRecord => {
    const record = simRecord({ ...acme, tenantId: 'acme-eu' }, 60);
    return {
      ...record,
      revision,
      enabled,
      defender: {
        ...record.defender,
        azureTenantId: acme.azureTenantId.toUpperCase(),
        clientId: acme.clientId.toUpperCase(),
        clientSecret: sealer.seal(acme.secret, 'acme-eu'),
      },
    };
  };

  /** The poller's table of `urs.tenants`, holding `records` in order. */
  async function tableOf(...records: TenantRecord[]): Promise<TenantTable> {
    const table = createTenantTable();
    for (const [offset, record] of records.entries())
      await table.handle(
        inboundMessage(record, {
          topic: 'urs.tenants',
          partition: 0,
          offset: String(offset),
          key: record.tenantId,
        }),
      );
    return table;
  }

  /** One hourly cycle of acme, its sharers counted by `table`. */
  const cycle = (table: TenantTable) => {
    const record = simRecord(acme, 60);
    return runCycle(
      { ...unsentCycleDeps(gateway, fitAfterTaking()), quotaSharers: (tenant) => table.quotaSharers(tenant) },
      {
        record,
        cycleId: `acme-${Date.now()}`,
        startedAt: Date.now(),
        intervalMs: 3_600_000,
        lease: { tenantId: 'acme', token: '1:poller' },
        signal: new AbortController().signal,
        leaseHeld: () => true,
      },
    );
  };

  it('a tenant alone on its app should take per-device calls for 1,000 devices polled hourly', async () => {
    const result = await cycle(await tableOf(simRecord(acme, 60)));
    expect(result).toMatchObject({ vulnerabilityMode: 'per-device', note: null });
  });

  it('a tenant sharing its app with another enabled tenant should take the bulk export, and say why', async () => {
    const result = await cycle(await tableOf(simRecord(acme, 60), acmeEu(true)));
    expect(result.vulnerabilityMode).toBe('bulk');
    expect(result.note).toMatch(
      /devices exceed the 600 per-device calls the API quota allows in a 60-minute interval, the quota of its Entra app being shared by 2 registrations/,
    );
  });

  it('a disabled tenant of the same app should not count', async () => {
    const result = await cycle(await tableOf(simRecord(acme, 60), acmeEu(true), acmeEu(false, 2)));
    expect(result).toMatchObject({ vulnerabilityMode: 'per-device', note: null });
  });
});
