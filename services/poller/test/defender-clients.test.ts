import { randomUUID } from 'node:crypto';
import type { Publisher } from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { createHttpsAgent, createLocalLimiter } from '@urs/defender';
import { silentLogger } from '@urs/logging';
import { UrsError } from '@urs/resilience';
import { createSecretSealer } from '@urs/secrets';
import { type Simulator, startSimulator } from '@urs/simulator';
import type { CycleStore } from '@urs/store';
import { runCycle, type CycleDeps } from '../src/cycle';
import { type DefenderGateway } from '../src/defender';
import { fitAfterTaking } from './support/cycle';
import { simGateway } from './support/sim-gateway';
import { failureKindOf } from '../src/schedule';

const sealer = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', Buffer.alloc(32, 5)]]) });

// The poller's gateway against the simulator's Entra ID: its token requests are what is counted.
describe('poller: a tenant keeps its Defender client across cycles', () => {
  let sim: Simulator;
  let gateway: DefenderGateway;
  let limiter: ReturnType<typeof createLocalLimiter>;
  let agent: ReturnType<typeof createHttpsAgent>;
  const azureTenantId = randomUUID();
  const clientId = randomUUID();
  const secrets = [`Zx8Q~${randomUUID().replace(/-/g, '')}One`, `Zx8Q~${randomUUID().replace(/-/g, '')}Two`];

  const record = (revision: number, secret: string): TenantRecord => ({
    schemaVersion: 1,
    tenantId: 'acme',
    revision,
    updatedAt: '2026-01-01T00:00:00.000Z',
    source: 'rest',
    enabled: true,
    defender: {
      azureTenantId,
      clientId,
      clientSecret: sealer.seal(secret, 'acme'),
      pollIntervalMinutes: 60,
      cloud: 'commercial',
      region: null,
      riskProfile: null,
    },
  });

  /** Token requests of the tenant the simulator answered since it started. */
  const tokenRequests = (): number => sim.stats().callsByTenant[azureTenantId]?.['token'] ?? 0;

  /** The cycle's other dependencies; the first `failingSends` sends fail as Redis away would. */
  function deps(failingSends: number): CycleDeps {
    let failures = failingSends;
    const publisher = {
      async send() {
        if (failures-- > 0)
          throw new UrsError('REDIS_UNAVAILABLE', 'Connection is closed.', {
            canRetry: true,
            infrastructure: true,
          });
      },
    } as unknown as Publisher;
    const cycles = { begin: async () => undefined, listed: async () => undefined } as unknown as CycleStore;
    return {
      defender: gateway,
      sealer,
      publisher,
      cycles,
      deviceBatchesTopic: 'urs.device-batches',
      batchFit: fitAfterTaking(),
      batchSize: 500,
      maxCycleMs: 3_600_000,
      logger: silentLogger,
    };
  }

  const cycle = (cycleDeps: CycleDeps, tenant: TenantRecord) =>
    runCycle(cycleDeps, {
      record: tenant,
      cycleId: `acme-${Date.now()}`,
      startedAt: Date.now(),
      intervalMs: 3_600_000,
      lease: { tenantId: tenant.tenantId, token: '1:poller' },
      signal: new AbortController().signal,
      leaseHeld: () => true,
    });

  // A simulator and a gateway of each test's own: its token count starts at 0 and its tenant's app and the
  // gateway's clients are as below, whichever tests ran before.
  beforeEach(async () => {
    sim = await startSimulator({ quotas: false });
    sim.addTenant({
      azureTenantId,
      apps: [{ clientId, clientSecret: secrets[0] as string }],
      fleet: { size: 3, seed: 7 },
    });
    agent = createHttpsAgent({ extraCa: sim.caPem });
    limiter = createLocalLimiter();
    gateway = simGateway(sim, agent, limiter, {
      requestTimeoutMs: 5_000,
    });
  });

  afterEach(async () => {
    gateway?.close();
    await limiter.close();
    agent?.destroy();
    await sim?.close();
  });

  it('a cycle failed on infrastructure and its retry, then the next cycle, should ask Entra for one token', async () => {
    const first = record(1, secrets[0] as string);
    const failed = await cycle(deps(1), first).catch((error: unknown) => error);
    expect(failureKindOf(failed)).toBe('infrastructure');
    await cycle(deps(0), first);
    await cycle(deps(0), first);
    expect(tokenRequests()).toBe(1);
  });

  it('a new record of the tenant (its secret changed) should get a new client, and a new token', async () => {
    await cycle(deps(0), record(1, secrets[0] as string));
    // The app's secret rotated: Entra takes only the new one, so the old client (and its token) must go.
    sim.removeTenant(azureTenantId);
    sim.addTenant({
      azureTenantId,
      apps: [{ clientId, clientSecret: secrets[1] as string }],
      fleet: { size: 3, seed: 7 },
    });
    const before = tokenRequests();
    await cycle(deps(0), record(2, secrets[1] as string));
    await cycle(deps(0), record(2, secrets[1] as string));
    expect(tokenRequests()).toBe(before + 1);
  });

  it('a tenant forgotten (deleted or disabled) should get a new client at its next cycle', async () => {
    const tenant = record(1, secrets[0] as string);
    await cycle(deps(0), tenant);
    const before = tokenRequests();
    gateway.forget('acme');
    await cycle(deps(0), tenant);
    expect(tokenRequests()).toBe(before + 1);
  });

  it('a cycle refused for missing consent should ask for a new token at its next try, once consent is granted', async () => {
    // Registered before the admin consented: the app has no role, so its token has none.
    sim.removeTenant(azureTenantId);
    sim.addTenant({
      azureTenantId,
      apps: [{ clientId, clientSecret: secrets[1] as string, roles: [] }],
      fleet: { size: 3, seed: 7 },
    });
    const tenant = record(3, secrets[1] as string);
    const refused = await cycle(deps(0), tenant).catch((error: unknown) => error);
    expect(failureKindOf(refused)).toBe('setup');
    // Consent granted in Entra; the tenant's record is unchanged.
    sim.removeTenant(azureTenantId);
    sim.addTenant({
      azureTenantId,
      apps: [{ clientId, clientSecret: secrets[1] as string }],
      fleet: { size: 3, seed: 7 },
    });
    await expect(cycle(deps(0), tenant)).resolves.toMatchObject({ totalDevices: 3 });
  });
});
