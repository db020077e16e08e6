import { inspect } from 'node:util';
import { type Simulator, startSimulator } from '@urs/simulator';
import { Registry } from '@urs/telemetry';
import { retryPolicy } from '@urs/resilience';
import { capturingLogger, type LogLine } from '@urs/testkit';
import {
  DefenderErrorCode,
  MICROSOFT_QUOTAS,
  type QuotaGate,
  createLocalLimiter,
  createLocalQuotaGate,
  withSlotHandOff,
} from '../src';
import { type TestApp, newApp, simClient } from './support';

let sim: Simulator;
let app: TestApp;

// A simulator of each test's own: its fault rolls start from the same seed and its quotas are whole, whichever
// tests ran before.
beforeEach(async () => {
  sim = await startSimulator({ quotas: true });
  app = newApp();
  sim.addTenant({ azureTenantId: app.azureTenantId, apps: [app], fleet: { size: 60, seed: 13 } });
});

afterEach(async () => {
  await sim.close();
});

describe('createDefenderClient when retries run out', () => {
  it('listMachines should fail MALFORMED_RESPONSE, retryable, when every body is truncated', async () => {
    sim.setFaults(app.azureTenantId, { malformedRate: 1 });
    const { client, close } = simClient(sim, app);
    try {
      await expect(client.listMachines()).rejects.toMatchObject({
        code: DefenderErrorCode.MALFORMED_RESPONSE,
        canRetry: true,
      });
    } finally {
      await close();
    }
  });

  it('listMachines should fail UNAVAILABLE, retryable, when every answer is a 5xx', async () => {
    sim.setFaults(app.azureTenantId, { status5xxRate: 1 });
    const { client, close } = simClient(sim, app);
    try {
      sim.resetStats();
      await expect(client.listMachines()).rejects.toMatchObject({
        code: DefenderErrorCode.UNAVAILABLE,
        canRetry: true,
      });
      // The support helper's policy: 6 attempts.
      expect(sim.stats().calls.machines).toBe(6);
    } finally {
      await close();
    }
  });

  it('getMachineVulnerabilities should fail THROTTLED with the Retry-After once the wait budget is spent', async () => {
    // A client that believes in a larger quota than Microsoft's 50/min, and may not wait at all.
    const generous = [{ limit: 1_000, windowMs: 60_000 }];
    const quota = createLocalQuotaGate({
      limits: { machines: generous, vulnerabilities: generous, bulk: generous, exportFiles: generous },
    });
    const metrics = new Registry({ processMetrics: false });
    const { client, close } = simClient(sim, app, { quota, maxThrottleWaitMs: 0, metrics });
    try {
      const ids = sim.machines(app.azureTenantId).map((m) => m.id);
      const results = await Promise.allSettled(ids.map((id) => client.getMachineVulnerabilities(id)));
      const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(50);
      expect(rejected).toHaveLength(10);
      for (const r of rejected) {
        expect(r.reason).toMatchObject({ code: DefenderErrorCode.THROTTLED, canRetry: true });
        expect(r.reason.retryAfterMs).toBeGreaterThan(0);
      }
      // What an operator sees: Microsoft's 429s by endpoint, every call timed, every wait before a call.
      const exposed = metrics.expose();
      expect(exposed).toContain('urs_defender_calls_total{endpoint="vulnerabilities",status="200"} 50');
      expect(exposed).toContain('urs_defender_calls_total{endpoint="vulnerabilities",status="429"} 10');
      expect(exposed).toContain('urs_defender_call_seconds_count{endpoint="vulnerabilities"} 60');
      expect(exposed).toContain('urs_defender_wait_seconds_count{endpoint="vulnerabilities",for="quota"} 60');
      expect(exposed).toContain('urs_defender_wait_seconds_count{endpoint="vulnerabilities",for="slot"} 60');
      expect(exposed).not.toContain(app.clientSecret);
      expect(exposed).not.toContain(app.azureTenantId);
    } finally {
      await close();
    }
  });
});

describe('createDefenderClient when an answer outlasts its call slot', () => {
  // Six devices, every answer slow.
  const slow = newApp();
  beforeEach(() => {
    sim.addTenant({ azureTenantId: slow.azureTenantId, apps: [slow], fleet: { size: 6, seed: 19 } });
    sim.setFaults(slow.azureTenantId, { slowBodyRate: 1 });
  });
  /** Waits until the simulator holds no call open any more (its client closed every connection). */
  async function noCallOpen(): Promise<number> {
    const until = Date.now() + 2_000;
    while (sim.stats().inFlight > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    return sim.stats().inFlight;
  }

  it('listMachines should stop each call as its slot ends and fail UNAVAILABLE, retryable, naming the slot, when every answer is slower than a slot lasts', async () => {
    // Every answer trickles a byte each 100 ms, so the request's idle timeout (5 s) never fires; slots end
    // 30 ms before their 300 ms job expiration.
    const limiter = createLocalLimiter({ jobExpirationMs: 300 });
    const { client, close } = simClient(sim, slow, {
      limiter,
      requestTimeoutMs: 5_000,
      retryPolicy: retryPolicy({ maxAttempts: 2, initialDelayMs: 10, maxDelayMs: 10 }),
    });
    try {
      sim.resetStats();
      await expect(client.listMachines()).rejects.toMatchObject({
        code: DefenderErrorCode.UNAVAILABLE,
        canRetry: true,
        message: expect.stringContaining(
          'was stopped when its call slot ended (held 270 ms, as long as the limiter allows)',
        ),
      });
      expect(sim.stats().faultsByKind).toMatchObject({ slowBody: 2 });
      // The calls themselves ended, not only their slots: none is left beside the slots handed out again.
      expect(await noCallOpen()).toBe(0);
    } finally {
      await close();
    }
  });

  it('getMachineVulnerabilities stopped as its slot ends should fail with an error that holds no bearer token, however it is printed', async () => {
    const limiter = createLocalLimiter({ jobExpirationMs: 300 });
    const { client, close } = simClient(sim, slow, {
      limiter,
      requestTimeoutMs: 5_000,
      retryPolicy: retryPolicy({ maxAttempts: 1, initialDelayMs: 10, maxDelayMs: 10 }),
    });
    try {
      const id = sim.machines(slow.azureTenantId)[0]?.id as string;
      const error = await client.getMachineVulnerabilities(id).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toMatchObject({
        code: DefenderErrorCode.UNAVAILABLE,
        message: expect.stringContaining('was stopped when its call slot ended'),
      });
      // As Node prints an uncaught error, causes and all: Entra's tokens are JWTs (`eyJ…`).
      expect(inspect(error, { depth: 20 })).not.toMatch(/Bearer|eyJ/);
    } finally {
      await close();
    }
  });

  it('listMachines should stop each page whose body trickles at the request timeout, not at its slot’s end', async () => {
    // Slots as long as the limiter's default (a minute): only a deadline on each page's whole body stops it.
    const { client, close } = simClient(sim, slow, {
      requestTimeoutMs: 300,
      retryPolicy: retryPolicy({ maxAttempts: 2, initialDelayMs: 10, maxDelayMs: 10 }),
    });
    try {
      sim.resetStats();
      // Pages of 500, the smallest a page that times out is halved to: each attempt times out as it is.
      // Stopped by the request timeout (its message), not at the slot's end ("was stopped when its call slot
      // ended"), which would come only a minute in.
      await expect(client.listMachines({ pageSize: 500 })).rejects.toMatchObject({
        code: DefenderErrorCode.UNAVAILABLE,
        canRetry: true,
        message: `The Defender API did not answer tenant ${slow.azureTenantId} on /api/machines within 0.3 s (ECONNABORTED)`,
      });
      // Two attempts, each stopped so.
      expect(sim.stats().faultsByKind).toMatchObject({ slowBody: 2 });
      expect(await noCallOpen()).toBe(0);
    } finally {
      await close();
    }
  });

  it('getMachineVulnerabilities should never have more calls in flight than slots when answers outlast the slots handed from call to call', async () => {
    const limiter = withSlotHandOff(createLocalLimiter({ maxConcurrent: 2, jobExpirationMs: 300 }), {
      maxLeaseMs: 1_000,
    });
    const { client, close } = simClient(sim, slow, {
      limiter,
      requestTimeoutMs: 5_000,
      retryPolicy: retryPolicy({ maxAttempts: 1, initialDelayMs: 10, maxDelayMs: 10 }),
    });
    try {
      sim.resetStats();
      const ids = sim
        .machines(slow.azureTenantId)
        .slice(0, 6)
        .map((m) => m.id);
      const results = await Promise.allSettled(ids.map((id) => client.getMachineVulnerabilities(id)));
      for (const result of results) {
        expect(result).toMatchObject({
          status: 'rejected',
          reason: { code: DefenderErrorCode.UNAVAILABLE, canRetry: true },
        });
      }
      expect(sim.stats().calls.vulnerabilities).toBe(6);
      expect(sim.stats().peakConcurrency).toBeLessThanOrEqual(2);
      expect(await noCallOpen()).toBe(0);
    } finally {
      await close();
    }
  });
});

describe('createDefenderClient when a 429 asks for more than a call may wait', () => {
  it("getMachineVulnerabilities should hold the tenant's other calls back for the Retry-After it gives up on", async () => {
    const own = newApp();
    sim.addTenant({ azureTenantId: own.azureTenantId, apps: [own], fleet: { size: 51, seed: 17 } });
    const generous = [{ limit: 1_000, windowMs: 60_000 }];
    const local = createLocalQuotaGate({
      limits: { machines: generous, vulnerabilities: generous, bulk: generous, exportFiles: generous },
    });
    const blocks: { endpoint: string; ms: number }[] = [];
    const quota: QuotaGate = {
      acquire: (...args) => local.acquire(...args),
      block: async (tenant, endpoint, ms) => {
        blocks.push({ endpoint, ms });
        await local.block(tenant, endpoint, ms);
      },
    };
    const { client, close } = simClient(sim, own, { quota, maxThrottleWaitMs: 0 });
    try {
      const ids = sim.machines(own.azureTenantId).map((m) => m.id);
      await Promise.all(ids.slice(0, 50).map((id) => client.getMachineVulnerabilities(id)));
      // Microsoft's 50 a minute spent: the 51st is answered 429, more than this call may wait.
      const error = await client.getMachineVulnerabilities(ids[50] as string).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: DefenderErrorCode.THROTTLED });
      expect(blocks).toEqual([
        { endpoint: 'vulnerabilities', ms: (error as { retryAfterMs: number }).retryAfterMs },
      ]);
      expect(blocks[0]?.ms).toBeGreaterThan(0);
    } finally {
      await close();
    }
  });
});

describe('createDefenderClient with two apps of one tenant', () => {
  /** A second app registered in `app`'s tenant, and a client of each sharing `quota`. */
  function twoApps(quota: QuotaGate, deps: Parameters<typeof simClient>[2] = {}) {
    const other = { ...newApp(), azureTenantId: app.azureTenantId };
    sim.removeTenant(app.azureTenantId);
    sim.addTenant({ azureTenantId: app.azureTenantId, apps: [app, other], fleet: { size: 60, seed: 13 } });
    const a = simClient(sim, app, { quota, ...deps });
    const b = simClient(sim, other, { quota, ...deps });
    return { a, b, close: () => Promise.all([a.close(), b.close()]) };
  }

  it("each app should have its tenant's quota of its own, as Microsoft counts per application and tenant", async () => {
    const quota = createLocalQuotaGate({
      limits: { ...MICROSOFT_QUOTAS, vulnerabilities: [{ limit: 3, windowMs: 60_000 }] },
    });
    const { a, b, close } = twoApps(quota, { maxQuotaWaitMs: 0 });
    try {
      const id = sim.machines(app.azureTenantId)[0]?.id as string;
      for (let i = 0; i < 3; i++) await a.client.getMachineVulnerabilities(id);
      await expect(a.client.getMachineVulnerabilities(id)).rejects.toMatchObject({
        code: DefenderErrorCode.THROTTLED,
      });
      // The first app's quota spent, the second's is whole.
      for (let i = 0; i < 3; i++) await b.client.getMachineVulnerabilities(id);
    } finally {
      await close();
    }
  });

  it("a 429 to one app should not hold back the tenant's other app", async () => {
    const quota = createLocalQuotaGate();
    const { a, b, close } = twoApps(quota, { maxThrottleWaitMs: 0, maxQuotaWaitMs: 0 });
    try {
      sim.setFaults(app.azureTenantId, { throttledCalls: 1, throttleRetryAfterSec: 600 });
      await expect(a.client.listMachines()).rejects.toMatchObject({ code: DefenderErrorCode.THROTTLED });
      // The first app is held back for the 429's Retry-After; the second goes on.
      await expect(a.client.listMachines()).rejects.toMatchObject({
        code: DefenderErrorCode.THROTTLED,
        retryAfterMs: expect.any(Number),
      });
      expect((await b.client.listMachines()).length).toBe(60);
    } finally {
      await close();
    }
  });
});

describe('createDefenderClient logging', () => {
  it('the client should never hand the client secret to its logger', async () => {
    // Every line as it was handed over, before any redaction.
    const lines: LogLine[] = [];
    const logger = capturingLogger(lines);
    sim.setFaults(app.azureTenantId, { status5xxRate: 0.3, malformedRate: 0.2 });
    const good = simClient(sim, app, { logger });
    const wrong = { ...app, clientSecret: `${app.clientSecret}X` };
    const bad = simClient(sim, wrong, { logger });
    try {
      await good.client.listMachines({ pageSize: 7 });
      await expect(bad.client.listMachines()).rejects.toMatchObject({
        code: DefenderErrorCode.INVALID_SECRET,
      });
      await bad.client.checkAccess();
      expect(lines.length).toBeGreaterThan(0);
      for (const line of lines) {
        expect(JSON.stringify(line)).not.toContain(app.clientSecret);
      }
    } finally {
      await good.close();
      await bad.close();
    }
  });
});

describe("createDefenderClient when its tenant's calls are held back", () => {
  // A single device: one call to hold back.
  const held = newApp();
  beforeEach(() => {
    sim.addTenant({ azureTenantId: held.azureTenantId, apps: [held], fleet: { size: 1, seed: 23 } });
  });

  it("should serve each endpoint's held-back count at 0 before any call is held back", async () => {
    const metrics = new Registry({ processMetrics: false });
    const { close } = simClient(sim, held, { metrics });
    try {
      // Present before the first hold-back: increase() counts nothing before a series' first sample.
      const exposed = metrics.expose();
      for (const endpoint of ['machines', 'vulnerabilities', 'bulk', 'exportFiles'])
        expect(exposed).toContain(`urs_defender_calls_total{endpoint="${endpoint}",status="held-back"} 0`);
    } finally {
      await close();
    }
  });

  it('getMachineVulnerabilities whose failure starts a hold-back should count the call held back', async () => {
    // Every answer a 503, each failure slow enough to count, the first one holding the tenant's calls back.
    sim.setFaults(held.azureTenantId, { status5xxRate: 1 });
    const metrics = new Registry({ processMetrics: false });
    const { client, close } = simClient(sim, held, { metrics, health: { holdBackAfter: 1, slowCallMs: 0 } });
    try {
      const [id] = sim.machines(held.azureTenantId).map((m) => m.id);
      await expect(client.getMachineVulnerabilities(id as string)).rejects.toMatchObject({
        details: { heldBackUntil: expect.any(Number) },
      });
      // Sent once, its retry not made: the hold-back it started shows from this call on.
      expect(sim.stats().callsByTenant[held.azureTenantId]?.vulnerabilities).toBe(1);
      expect(metrics.expose()).toContain(
        'urs_defender_calls_total{endpoint="vulnerabilities",status="held-back"} 1',
      );
    } finally {
      await close();
    }
  });
});
