import { randomUUID } from 'node:crypto';
import { createHttpsAgent, createLocalLimiter, createLocalQuotaGate } from '@urs/defender';
import { silentLogger } from '@urs/logging';
import { type Simulator, startSimulator } from '@urs/simulator';
import { Registry } from '@urs/telemetry';
import { createAccessChecker } from '../src/access';
import type { AccessChecker, AccessCheckTenant } from '../src/http/tenants';

const HELD_BACK = "calls are held back by its API quota (Microsoft's limits, or a 429's Retry-After)";

// The access check with the real Defender client against the simulator, its tenant's quota held back as the
// pollers and fetchers that share it left it.
describe('createAccessChecker', () => {
  let sim: Simulator;
  let agent: ReturnType<typeof createHttpsAgent>;
  const limiter = createLocalLimiter();
  const quota = createLocalQuotaGate({ maxPollMs: 50 });
  let check: AccessChecker;

  function newTenant(): AccessCheckTenant {
    const tenant = {
      azureTenantId: randomUUID(),
      clientId: randomUUID(),
      clientSecret: `Zx8Q~${randomUUID().replace(/-/g, '')}`,
      cloud: 'commercial',
      region: null,
    };
    sim.addTenant({
      azureTenantId: tenant.azureTenantId,
      apps: [{ clientId: tenant.clientId, clientSecret: tenant.clientSecret }],
      fleet: { size: 3, seed: 7 },
    });
    return tenant;
  }

  /** The check with the time limit the REST handler gives it. */
  function checkWithin(tenant: AccessCheckTenant, timeLimitMs: number) {
    const signal = AbortSignal.timeout(timeLimitMs);
    return check(tenant, signal, Date.now() + timeLimitMs).then((result) => ({
      result,
      stoppedAtTimeLimit: signal.aborted,
    }));
  }

  beforeAll(async () => {
    sim = await startSimulator({ quotas: false });
    agent = createHttpsAgent({ extraCa: sim.caPem });
    check = createAccessChecker({
      limiter,
      quota,
      logger: silentLogger,
      overrides: { authorityHost: sim.baseUrl, apiBase: sim.baseUrl },
      httpsAgent: agent,
      metrics: new Registry(),
      requestTimeoutMs: 5_000,
    });
  });

  afterAll(async () => {
    await limiter.close();
    agent?.destroy();
    await sim?.close();
  });

  it('the check of a tenant whose quota is held back past its time limit should say so before the limit, and for how long', async () => {
    const tenant = newTenant();
    // A 429's Retry-After of 10 minutes, recorded by a poller's call.
    await quota.block(tenant, 'machines', 600_000);
    const { result, stoppedAtTimeLimit } = await checkWithin(tenant, 3_000);
    expect(stoppedAtTimeLimit).toBe(false);
    expect(result).toMatchObject({ ok: false, tokenIssued: true, machinesReadable: false });
    expect(result.verdict).toBe(
      `FAIL: Tenant ${tenant.azureTenantId}'s machines ${HELD_BACK} for another 600 s`,
    );
    expect(result.error).toMatchObject({ code: 'DEFENDER_THROTTLED' });
  });

  it('the check should wait out a hold-back of the quota that ends within its time limit', async () => {
    const tenant = newTenant();
    await quota.block(tenant, 'machines', 300);
    const { result } = await checkWithin(tenant, 10_000);
    expect(result).toMatchObject({ ok: true, machinesReadable: true, vulnerabilitiesReadable: true });
  });

  it('the check answered a 429 whose Retry-After is past its time limit should fail before the limit, not wait for it', async () => {
    const tenant = newTenant();
    sim.setFaults(tenant.azureTenantId, { throttledCalls: 1, throttleRetryAfterSec: 600 });
    const { result, stoppedAtTimeLimit } = await checkWithin(tenant, 3_000);
    expect(stoppedAtTimeLimit).toBe(false);
    expect(result).toMatchObject({
      ok: false,
      machinesReadable: false,
      error: { code: 'DEFENDER_THROTTLED' },
    });
    expect(result.verdict).toBe(
      `FAIL: The Defender API throttled tenant ${tenant.azureTenantId} on /api/machines (429): it asks to wait 600 s`,
    );
  });

  it('the check answered a 429 late in its time limit, whose Retry-After would end past it, should fail before the limit', async () => {
    const tenant = newTenant();
    // Most of the time limit goes to waiting out the quota; the 429 that follows asks for less than the whole
    // limit but more than what is left of it.
    await quota.block(tenant, 'machines', 1_800);
    sim.setFaults(tenant.azureTenantId, { throttledCalls: 1, throttleRetryAfterSec: 2 });
    const { result, stoppedAtTimeLimit } = await checkWithin(tenant, 3_000);
    expect(stoppedAtTimeLimit).toBe(false);
    expect(result).toMatchObject({
      ok: false,
      machinesReadable: false,
      error: { code: 'DEFENDER_THROTTLED' },
    });
    expect(result.verdict).toBe(
      `FAIL: The Defender API throttled tenant ${tenant.azureTenantId} on /api/machines (429): it asks to wait 2 s`,
    );
  });
});
