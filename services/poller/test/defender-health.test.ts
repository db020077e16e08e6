import { randomUUID } from 'node:crypto';
import { CallHealth, createHttpsAgent, createLocalLimiter, type CallLimiter } from '@urs/defender';
import { type Simulator, startSimulator } from '@urs/simulator';
import { Registry } from '@urs/telemetry';
import { type DefenderGateway, type TenantCredentials } from '../src/defender';
import { simGateway } from './support/sim-gateway';

// The poller's gateway against the simulator: what a tenant's calls showed of its API outlives its client.
describe('createDefenderGateway and a tenant whose API stops answering', () => {
  let sim: Simulator;
  let gateway: DefenderGateway;
  let limiter: CallLimiter;
  let agent: ReturnType<typeof createHttpsAgent>;
  const azureTenantId = randomUUID();
  const apps = [1, 2].map(() => ({ clientId: randomUUID(), clientSecret: `Zx8Q~${randomUUID()}Sec` }));
  const credentials = (app: { clientId: string; clientSecret: string }): TenantCredentials => ({
    azureTenantId,
    clientId: app.clientId,
    clientSecret: app.clientSecret,
    cloud: 'commercial',
    region: null,
  });

  /** Lists the tenant's devices through its client of record `revision`: their count, or the error. */
  async function list(revision: number, app: { clientId: string; clientSecret: string }): Promise<unknown> {
    const client = gateway.forTenant({ tenantId: 'acme', revision }, () => credentials(app));
    let devices = 0;
    try {
      for await (const page of client.listDevicePages(new AbortController().signal))
        devices += page.devices.length;
      return devices;
    } catch (error) {
      return error;
    }
  }

  beforeEach(async () => {
    sim = await startSimulator({ quotas: false });
    sim.addTenant({ azureTenantId, apps, fleet: { size: 3, seed: 7 } });
    limiter = createLocalLimiter();
    agent = createHttpsAgent({ extraCa: sim.caPem });
    gateway = simGateway(sim, agent, limiter, {
      metrics: new Registry({ processMetrics: false }),
      // A call unanswered for 400 ms is a slow failure, and the first one holds the tenant's calls back.
      requestTimeoutMs: 400,
      health: { holdBackAfter: 1 },
    });
  });

  afterEach(async () => {
    gateway.close();
    await limiter.close();
    agent.destroy();
    await sim.close();
  });

  it("forTenant should keep the tenant's calls held back across a re-seal of its secret, and start a different app afresh", async () => {
    sim.setFaults(azureTenantId, { timeoutRate: 1 });
    expect(CallHealth.isHeldBack(await list(1, apps[0]!))).toBe(true);
    // The API answers again, but the hold-back lasts its 30 s.
    sim.setFaults(azureTenantId, {});
    // The registrar re-sealed the same secret: a new record revision, a new client, the same app.
    expect(CallHealth.isHeldBack(await list(2, apps[0]!))).toBe(true);
    // Another app of the tenant owes nothing to the first one's calls.
    expect(await list(3, apps[1]!)).toBe(3);
  });
});
