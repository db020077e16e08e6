import { randomUUID } from 'node:crypto';
import { createHttpsAgent, createLocalLimiter, createLocalQuotaGate } from '@urs/defender';
import { silentLogger } from '@urs/logging';
import { type Simulator, startSimulator } from '@urs/simulator';
import { Registry } from '@urs/telemetry';
import { createDefenderGateway } from '../src/defender';

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

  it("createDefenderGateway should list a tenant's devices in pages of its pageSize", async () => {
    const credentials = {
      azureTenantId: randomUUID(),
      clientId: randomUUID(),
      clientSecret: `Zx8Q~${randomUUID().replace(/-/g, '')}One`,
      cloud: 'commercial',
      region: null,
    };
    sim.addTenant({
      azureTenantId: credentials.azureTenantId,
      apps: [{ clientId: credentials.clientId, clientSecret: credentials.clientSecret }],
      fleet: { size: 250, seed: 7 },
    });
    const gateway = createDefenderGateway({
      limiter,
      quota: createLocalQuotaGate(),
      logger: silentLogger,
      overrides: { authorityHost: sim.baseUrl, apiBase: sim.baseUrl },
      httpsAgent: agent,
      metrics: new Registry(),
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
});
