import { randomUUID } from 'node:crypto';
import { createHttpsAgent, createLocalLimiter } from '@urs/defender';
import { type Simulator, startSimulator } from '@urs/simulator';
import { CLEAN_LISTINGS_TO_GROW, createDefenderGateway } from '../src/defender';
import { simGateway } from './support/sim-gateway';

describe('createDefenderGateway', () => {
  let sim: Simulator;
  const limiter = createLocalLimiter();
  let agent: ReturnType<typeof createHttpsAgent>;

  beforeAll(async () => {
    sim = await startSimulator({ quotas: false });
    agent = createHttpsAgent({ extraCa: sim.caPem });
  });

  afterAll(async () => {
    await limiter.close();
    agent?.destroy();
    await sim?.close();
  });

  function newCredentials() {
    return {
      azureTenantId: randomUUID(),
      clientId: randomUUID(),
      clientSecret: `Zx8Q~${randomUUID().replace(/-/g, '')}One`,
      cloud: 'commercial',
      region: null,
    };
  }

  it("createDefenderGateway should list a tenant's devices in pages of its pageSize", async () => {
    const credentials = newCredentials();
    sim.addTenant({
      azureTenantId: credentials.azureTenantId,
      apps: [{ clientId: credentials.clientId, clientSecret: credentials.clientSecret }],
      fleet: { size: 250, seed: 7 },
    });
    const gateway = simGateway(sim, agent, limiter, {
      pageSize: 100,
    });
    try {
      const sizes: number[] = [];
      const pages = gateway
        .forTenant({ tenantId: 'acme', revision: 1 }, () => credentials)
        .listDevicePages(new AbortController().signal);
      for await (const page of pages) sizes.push(page.devices.length);
      // Each full page after the first re-reads 5 devices of the one before (the walk's overlap).
      expect(sizes).toEqual([100, 95, 55]);
    } finally {
      gateway.close();
    }
  });

  describe('when a page outlasts the request timeout', () => {
    // ~1 KB a device at 1 MB/s: a page of 2,000 takes ~2 s, past the 1.5 s timeout however fast the machine;
    // one of 500 ~0.5 s, within it also on a loaded machine (a page of 1,000 may go either way).
    const credentials = newCredentials();
    let gateway: ReturnType<typeof createDefenderGateway>;

    beforeEach(() => {
      sim.addTenant({
        azureTenantId: credentials.azureTenantId,
        apps: [{ clientId: credentials.clientId, clientSecret: credentials.clientSecret }],
        fleet: { size: 2_100, seed: 11 },
      });
      gateway = simGateway(sim, agent, limiter, {
        requestTimeoutMs: 1_500,
        pageSize: 2_000,
      });
    });

    afterEach(() => {
      sim.setFaults(credentials.azureTenantId, {});
      gateway.close();
    });

    /** One cycle's listing of the tenant: the devices of each page. */
    async function listing(): Promise<number[]> {
      const sizes: number[] = [];
      const pages = gateway
        .forTenant({ tenantId: 'slow', revision: 1 }, () => credentials)
        .listDevicePages(new AbortController().signal);
      for await (const page of pages) sizes.push(page.devices.length);
      return sizes;
    }

    it("the tenant's next listing should start at the page size its last one halved to, then twice that after clean listings", async () => {
      sim.setFaults(credentials.azureTenantId, { bodyBytesPerSec: 1_000_000 });
      const slow = await listing();
      const halved = slow[0] as number;
      expect(halved).toBeLessThanOrEqual(1_000);
      // The link is fast again: the next listings still start at the smaller page, not at 2,000 first.
      sim.setFaults(credentials.azureTenantId, {});
      for (let cycle = 0; cycle < CLEAN_LISTINGS_TO_GROW; cycle++) expect((await listing())[0]).toBe(halved);
      // Then twice as large.
      expect((await listing())[0]).toBe(2 * halved);
    }, 60_000);
  });
});
