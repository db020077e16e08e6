import type { Agent } from 'node:https';
import type { Logger } from '@urs/logging';
import { type Simulator, startSimulator } from '@urs/simulator';
import {
  type CallLimiter,
  DefenderErrorCode,
  createHttpsAgent,
  createLocalLimiter,
  createTokenSource,
  resolveEndpoints,
} from '../src';
import { type TestApp, newApp, simClient } from './support';

let sim: Simulator;
let app: TestApp;

beforeAll(async () => {
  sim = await startSimulator({ quotas: false });
  app = newApp();
  sim.addTenant({ azureTenantId: app.azureTenantId, apps: [app], fleet: { size: 10, seed: 5 } });
});

afterAll(async () => {
  await sim.close();
});

const sleepMs = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleepMs(5);
  }
}

/**
 * A limiter whose first `held` calls wait until the test lets them through (`release(n)`), so the test
 * decides when the requests reach the API; later calls go straight through.
 */
function gatedLimiter(held: number): CallLimiter & { waiting: () => number; release: (n: number) => void } {
  const inner = createLocalLimiter();
  const gates: Array<() => void> = [];
  let seen = 0;
  return {
    waiting: () => gates.length,
    release(n) {
      for (const open of gates.splice(0, n)) open();
    },
    async schedule(task) {
      if (seen++ < held) await new Promise<void>((resolve) => gates.push(resolve));
      return inner.schedule(task);
    },
    close: () => inner.close(),
  };
}

describe('createTokenSource single flight', () => {
  it('getMachineVulnerabilities should share one token request among 10 calls that start together', async () => {
    const { client, close } = simClient(sim, app);
    try {
      sim.resetStats();
      const ids = sim.machines(app.azureTenantId).map((m) => m.id);
      expect(ids).toHaveLength(10);
      const results = await Promise.all(ids.map((id) => client.getMachineVulnerabilities(id)));
      expect(results).toHaveLength(10);
      expect(sim.stats().calls.token).toBe(1);
      expect(sim.stats().calls.vulnerabilities).toBe(10);
    } finally {
      await close();
    }
  });

  it('getMachineVulnerabilities should refresh once for all the calls refused with the same expired token', async () => {
    const limiter = gatedLimiter(10);
    const { client, close } = simClient(sim, app, { limiter });
    sim.setTokenLifetime(1);
    try {
      sim.resetStats();
      const ids = sim.machines(app.azureTenantId).map((m) => m.id);
      let settled = 0;
      const calls = ids.map((id) =>
        client.getMachineVulnerabilities(id).finally(() => {
          settled++;
        }),
      );
      // All 10 calls hold the same 1-second token; they reach the API only after it has expired.
      await until(() => limiter.waiting() === 10, '10 calls at the gate');
      expect(sim.stats().calls.token).toBe(1);
      await sleepMs(2_100);
      sim.setTokenLifetime(3599);
      // Half of them see the 401 together; the rest see it after the refresh is done, with the old token.
      limiter.release(5);
      await until(() => settled === 5, 'the first 5 calls');
      limiter.release(5);
      const results = await Promise.all(calls);
      expect(results).toHaveLength(10);
      // One token at the start and one refresh: not one per refused call.
      expect(sim.stats().calls.token).toBe(2);
      // Every call was refused once (10) and then answered (10).
      expect(sim.stats().calls.vulnerabilities).toBe(20);
    } finally {
      sim.setTokenLifetime(3599);
      await close();
    }
  }, 20_000);
});

describe('createTokenSource refreshToken', () => {
  const endpoints = () =>
    resolveEndpoints(undefined, undefined, { authorityHost: sim.baseUrl, apiBase: sim.baseUrl });

  it('refreshToken should ask Entra only for a token that has not been replaced yet', async () => {
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    const tokens = createTokenSource({ endpoints: endpoints(), credentials: app, httpsAgent: agent });
    try {
      sim.resetStats();
      const first = await tokens.getToken();
      const second = await tokens.refreshToken(undefined, first.token);
      expect(second.token).not.toBe(first.token);
      expect(sim.stats().calls.token).toBe(2);
      // A call that was refused with the first token gets the replacement, without a new request.
      await expect(tokens.refreshToken(undefined, first.token)).resolves.toMatchObject({
        token: second.token,
      });
      expect(sim.stats().calls.token).toBe(2);
      // The replacement refused too: one more request, shared by every call that saw it refused.
      const thirds = await Promise.all(
        [1, 2, 3, 4, 5].map(() => tokens.refreshToken(undefined, second.token)),
      );
      expect(new Set(thirds.map((t) => t.token)).size).toBe(1);
      expect(thirds[0]?.token).not.toBe(second.token);
      expect(sim.stats().calls.token).toBe(3);
      await expect(tokens.getToken()).resolves.toMatchObject({ token: thirds[0]?.token });
      expect(sim.stats().calls.token).toBe(3);
    } finally {
      agent.destroy();
    }
  });

  it('getToken should let a waiter whose signal aborts leave while the others get the shared token', async () => {
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    const tokens = createTokenSource({ endpoints: endpoints(), credentials: app, httpsAgent: agent });
    sim.setLatency({ meanMs: 300 });
    try {
      sim.resetStats();
      const controller = new AbortController();
      const leaving = tokens.getToken(controller.signal);
      const staying = tokens.getToken();
      controller.abort();
      await expect(leaving).rejects.toMatchObject({ canRetry: true });
      await expect(staying).resolves.toMatchObject({ token: expect.any(String) });
      expect(sim.stats().calls.token).toBe(1);
    } finally {
      sim.setLatency({ meanMs: 0 });
      agent.destroy();
    }
  });
});

describe('createTokenSource while Entra is down', () => {
  const endpoints = () =>
    resolveEndpoints(undefined, undefined, { authorityHost: sim.baseUrl, apiBase: sim.baseUrl });

  /** A logger that keeps its warnings. */
  function warnings(): Logger & { lines: Array<{ message: string; fields?: Record<string, unknown> }> } {
    const lines: Array<{ message: string; fields?: Record<string, unknown> }> = [];
    const logger: Logger & { lines: typeof lines } = {
      lines,
      debug: () => undefined,
      info: () => undefined,
      warn: (message, fields) => {
        lines.push(fields ? { message, fields } : { message });
      },
      error: () => undefined,
      child: () => logger,
    };
    return logger;
  }

  /**
   * Runs `test` with a tenant of its own, so that its Entra faults touch no other test, and an agent trusting
   * the simulator; both let go afterwards, and the simulator's token lifetime set back.
   */
  async function withOwnTenant(test: (own: TestApp, agent: Agent) => Promise<void>): Promise<void> {
    const own = newApp();
    sim.addTenant({ azureTenantId: own.azureTenantId, apps: [own], fleet: { size: 1, seed: 7 } });
    const agent = createHttpsAgent({ extraCa: sim.caPem });
    try {
      await test(own, agent);
    } finally {
      sim.setTokenLifetime(3599);
      sim.removeTenant(own.azureTenantId);
      agent.destroy();
    }
  }

  /** A token source of `own`'s whose token is due for renewal (5 minutes before expiry), and that token. */
  async function dueForRenewal(own: TestApp, logger: Logger, agent: Agent) {
    const tokens = createTokenSource({
      endpoints: endpoints(),
      credentials: own,
      httpsAgent: agent,
      logger,
      renewalRetryMs: 200,
    });
    // Due for renewal about 2 seconds after it is issued.
    sim.setTokenLifetime(302);
    try {
      const first = await tokens.getToken();
      // Past the renewal time, by our clock and by MSAL's (whole seconds).
      await until(() => Date.now() >= first.expiresOnTimestamp - 300_000 + 1_000, 'the renewal time');
      return { tokens, first };
    } finally {
      sim.setTokenLifetime(3599);
    }
  }

  it("getToken should keep a token still valid when its renewal meets Entra's 503, without asking again at every call", async () => {
    await withOwnTenant(async (own, agent) => {
      const logger = warnings();
      const { tokens, first } = await dueForRenewal(own, logger, agent);
      sim.setFaults(own.azureTenantId, { status5xxRate: 1, tokenEndpoint: true });
      sim.resetStats();
      const [kept, alsoKept] = await Promise.all([tokens.getToken(), tokens.getToken()]);
      expect(kept.token).toBe(first.token);
      expect(alsoKept.token).toBe(first.token);
      const asked = sim.stats().calls.token;
      expect(asked).toBeGreaterThan(0);
      expect(logger.lines).toHaveLength(1);
      expect(logger.lines[0]?.fields).toMatchObject({
        code: DefenderErrorCode.UNAVAILABLE,
        error: expect.stringContaining('AADSTS50000'),
      });
      expect(JSON.stringify(logger.lines)).not.toContain(own.clientSecret);
      // Not asked again at every call: the next ones meanwhile keep the token without a request.
      await expect(tokens.getToken()).resolves.toMatchObject({ token: first.token });
      expect(sim.stats().calls.token).toBe(asked);
    });
  }, 20_000);

  it('getToken should keep a token still valid while Entra cannot be reached, and renew it at a later call once it can', async () => {
    await withOwnTenant(async (own, agent) => {
      const logger = warnings();
      const { tokens, first } = await dueForRenewal(own, logger, agent);
      sim.setFaults(own.azureTenantId, { resetRate: 1, tokenEndpoint: true });
      await expect(tokens.getToken()).resolves.toMatchObject({ token: first.token });
      expect(logger.lines).toHaveLength(1);
      sim.setFaults(own.azureTenantId, {});
      sim.resetStats();
      // Entra back: a call after the wait renews the token.
      await sleepMs(250);
      const renewed = await tokens.getToken();
      expect(renewed.token).not.toBe(first.token);
      expect(sim.stats().calls.token).toBe(1);
      await expect(tokens.getToken()).resolves.toMatchObject({ token: renewed.token });
    });
  }, 20_000);

  it("getToken should renew a kept token once Entra is back after a 503, at the source's own wait, not MSAL's minute", async () => {
    await withOwnTenant(async (own, agent) => {
      const logger = warnings();
      const { tokens, first } = await dueForRenewal(own, logger, agent);
      sim.setFaults(own.azureTenantId, { status5xxRate: 1, tokenEndpoint: true });
      await expect(tokens.getToken()).resolves.toMatchObject({ token: first.token });
      const keptAt = Date.now();
      sim.setFaults(own.azureTenantId, {});
      sim.resetStats();
      // Entra back: once the source's wait (200 ms here) is over, the next call renews the token.
      await until(() => Date.now() >= keptAt + 250, 'the wait after the failed renewal');
      const renewed = await tokens.getToken();
      expect(renewed.token).not.toBe(first.token);
      expect(sim.stats().calls.token).toBe(1);
    });
  }, 20_000);

  it("getToken should not ask Entra again within the source's wait after a 503, and ask it after, once Entra is back", async () => {
    await withOwnTenant(async (own, agent) => {
      const tokens = createTokenSource({
        endpoints: endpoints(),
        credentials: own,
        httpsAgent: agent,
        renewalRetryMs: 300,
      });
      sim.setFaults(own.azureTenantId, { status5xxRate: 1, tokenEndpoint: true });
      await expect(tokens.getToken()).rejects.toMatchObject({ code: DefenderErrorCode.UNAVAILABLE });
      const failedAt = Date.now();
      sim.setFaults(own.azureTenantId, {});
      sim.resetStats();
      // A caller's retries within the wait: answered without Entra (no new credential per try).
      await expect(tokens.getToken()).rejects.toMatchObject({ code: DefenderErrorCode.UNAVAILABLE });
      await expect(tokens.getToken()).rejects.toMatchObject({ code: DefenderErrorCode.UNAVAILABLE });
      expect(sim.stats().calls.token ?? 0).toBe(0);
      await until(() => Date.now() >= failedAt + 350, 'the wait after the failed request');
      await expect(tokens.getToken()).resolves.toMatchObject({ token: expect.any(String) });
      expect(sim.stats().calls.token).toBe(1);
    });
  });

  it('getToken should fail UNAVAILABLE, naming Entra and the wait, when the token request hangs, and recover after', async () => {
    await withOwnTenant(async (own, agent) => {
      const tokens = createTokenSource({
        endpoints: endpoints(),
        credentials: own,
        httpsAgent: agent,
        tokenRequestTimeoutMs: 300,
      });
      sim.setFaults(own.azureTenantId, { timeoutRate: 1, tokenEndpoint: true });
      // Callers without a signal of their own: only the shared request's bound ends their wait.
      const waiting = [tokens.getToken(), tokens.getToken()];
      for (const call of waiting) {
        await expect(call).rejects.toMatchObject({
          code: DefenderErrorCode.UNAVAILABLE,
          canRetry: true,
          message: expect.stringMatching(
            new RegExp(
              `^Entra ID \\(127\\.0\\.0\\.1:\\d+\\) did not answer the token request for tenant ${own.azureTenantId} within 300 ms`,
            ),
          ),
        });
      }
      sim.setFaults(own.azureTenantId, {});
      await expect(tokens.getToken()).resolves.toMatchObject({ token: expect.any(String) });
    });
  }, 10_000);

  it("getToken should fail THROTTLED with Entra's Retry-After for a 429, and not ask Entra again before it is over", async () => {
    await withOwnTenant(async (own, agent) => {
      const tokens = createTokenSource({
        endpoints: endpoints(),
        credentials: own,
        httpsAgent: agent,
        renewalRetryMs: 100,
      });
      sim.setFaults(own.azureTenantId, { tokenThrottleRetryAfterSec: 2 });
      await expect(tokens.getToken()).rejects.toMatchObject({
        code: DefenderErrorCode.THROTTLED,
        canRetry: true,
        retryAfterMs: expect.any(Number),
        message: expect.stringMatching(/Entra ID .* asks .* 2 s/),
      });
      const throttledAt = Date.now();
      sim.setFaults(own.azureTenantId, {});
      sim.resetStats();
      // Past the source's own wait after a failure, within Entra's: Entra is not asked.
      await sleepMs(300);
      const early = await tokens.getToken().catch((error: unknown) => error);
      expect(early).toMatchObject({ code: DefenderErrorCode.THROTTLED, retryAfterMs: expect.any(Number) });
      expect((early as { retryAfterMs: number }).retryAfterMs).toBeLessThanOrEqual(2_000);
      expect(sim.stats().calls.token ?? 0).toBe(0);
      await until(() => Date.now() >= throttledAt + 2_100, "the end of Entra's Retry-After");
      await expect(tokens.getToken()).resolves.toMatchObject({ token: expect.any(String) });
      expect(sim.stats().calls.token).toBe(1);
    });
  }, 20_000);

  it("a call should fail THROTTLED when Entra throttles its token request for longer than it may wait, leaving the API's quota free", async () => {
    const own = newApp();
    sim.addTenant({ azureTenantId: own.azureTenantId, apps: [own], fleet: { size: 1, seed: 7 } });
    const { client, quota, close } = simClient(sim, own, { maxThrottleWaitMs: 1_000 });
    try {
      sim.setFaults(own.azureTenantId, { tokenThrottleRetryAfterSec: 120 });
      const id = sim.machines(own.azureTenantId)[0]!.id;
      await expect(client.getMachineVulnerabilities(id)).rejects.toMatchObject({
        code: DefenderErrorCode.THROTTLED,
        retryAfterMs: expect.any(Number),
      });
      // Entra's wait holds no call of the tenant's API back (a wait of 0 ms allowed).
      await expect(quota.acquire(own, 'vulnerabilities', undefined, 0)).resolves.toBeDefined();
    } finally {
      sim.setFaults(own.azureTenantId, {});
      sim.removeTenant(own.azureTenantId);
      await close();
    }
  }, 20_000);

  it('getToken should close the connection of a token request Entra never answers once its time is up', async () => {
    await withOwnTenant(async (own, agent) => {
      const tokens = createTokenSource({
        endpoints: endpoints(),
        credentials: own,
        httpsAgent: agent,
        tokenRequestTimeoutMs: 300,
      });
      sim.setFaults(own.azureTenantId, { timeoutRate: 1, tokenEndpoint: true });
      await expect(tokens.getToken()).rejects.toMatchObject({ code: DefenderErrorCode.UNAVAILABLE });
      // No socket left waiting for the answer that never comes.
      await until(() => Object.keys(agent.sockets).length === 0, 'the unanswered request to be closed');
      sim.setFaults(own.azureTenantId, {});
    });
  }, 20_000);

  it('getToken should fail when the renewal meets an Entra outage and the token has a minute or less left', async () => {
    await withOwnTenant(async (own, agent) => {
      const tokens = createTokenSource({ endpoints: endpoints(), credentials: own, httpsAgent: agent });
      sim.setTokenLifetime(30);
      await tokens.getToken();
      sim.setTokenLifetime(3599);
      sim.setFaults(own.azureTenantId, { status5xxRate: 1, tokenEndpoint: true });
      await expect(tokens.getToken()).rejects.toMatchObject({
        code: DefenderErrorCode.UNAVAILABLE,
        canRetry: true,
      });
    });
  });

  it('refreshToken should fail, not hand back the refused token, when Entra is down', async () => {
    await withOwnTenant(async (own, agent) => {
      const tokens = createTokenSource({ endpoints: endpoints(), credentials: own, httpsAgent: agent });
      const first = await tokens.getToken();
      sim.setFaults(own.azureTenantId, { status5xxRate: 1, tokenEndpoint: true });
      await expect(tokens.refreshToken(undefined, first.token)).rejects.toMatchObject({
        code: DefenderErrorCode.UNAVAILABLE,
      });
    });
  });

  it('getToken should not hand out a kept token again once the API refused it', async () => {
    await withOwnTenant(async (own, agent) => {
      const logger = warnings();
      const { tokens, first } = await dueForRenewal(own, logger, agent);
      sim.setFaults(own.azureTenantId, { resetRate: 1, tokenEndpoint: true });
      await expect(tokens.getToken()).resolves.toMatchObject({ token: first.token });
      // The API answers 401 for it while Entra is still away: the refresh fails, and the token is not kept.
      await expect(tokens.refreshToken(undefined, first.token)).rejects.toMatchObject({
        code: DefenderErrorCode.UNAVAILABLE,
      });
      await expect(tokens.getToken()).rejects.toMatchObject({ code: DefenderErrorCode.UNAVAILABLE });
    });
  }, 20_000);
});
