import { type Simulator, startSimulator } from '@urs/simulator';
import { retryPolicy } from '@urs/resilience';
import {
  CallHealth,
  DefenderErrorCode,
  createHttpsAgent,
  createLocalLimiter,
  UNLIMITED_QUOTA_GATE,
  withSlotHandOff,
  type CallLimiter,
  type DefenderClient,
} from '../src';
import { type TestApp, newApp, simClient } from './support';

/**
 * Two tenants sharing the 10 call slots, as every tenant of a vuln-fetcher does: one whose API stops
 * answering must not keep the other's calls waiting behind its timeouts and retries.
 */
jest.setTimeout(20_000);

let sim: Simulator;
let failing: TestApp;
let healthy: TestApp;

beforeAll(async () => {
  sim = await startSimulator({ quotas: false });
  failing = newApp();
  healthy = newApp();
  sim.addTenant({ azureTenantId: failing.azureTenantId, apps: [failing], fleet: { size: 30, seed: 21 } });
  sim.addTenant({ azureTenantId: healthy.azureTenantId, apps: [healthy], fleet: { size: 30, seed: 22 } });
});

afterAll(async () => {
  await sim.close();
});

afterEach(() => {
  sim.setFaults(failing.azureTenantId, {});
  sim.setLatency({ meanMs: 0 });
});

const callsOf = (app: TestApp): number => sim.stats().callsByTenant[app.azureTenantId]?.vulnerabilities ?? 0;

/** Each device's vulnerabilities asked for by `workers` callers at once, like a batch of the vuln-fetcher. */
async function perDevice(
  client: DefenderClient,
  ids: string[],
  workers: number,
): Promise<PromiseSettledResult<unknown>[]> {
  const results: PromiseSettledResult<unknown>[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      for (let index = next++; index < ids.length; index = next++) {
        [results[index]] = await Promise.allSettled([client.getMachineVulnerabilities(ids[index] as string)]);
      }
    }),
  );
  return results;
}

/** The failing tenant's calls, its API answering again, are all answered and in flight together again. */
async function expectCallsLetOut(client: DefenderClient, ids: string[]): Promise<void> {
  // Calls that take a while (100 ms: long enough on a loaded machine too), so that the calls let out are
  // in flight together.
  sim.setLatency({ meanMs: 100 });
  sim.resetStats();
  const answered = await perDevice(client, ids, 15);
  expect(answered.every((result) => result.status === 'fulfilled')).toBe(true);
  expect(sim.stats().peakConcurrencyByTenant[failing.azureTenantId]).toBeGreaterThanOrEqual(8);
}

async function until(check: () => boolean, what: string): Promise<void> {
  const giveUpAt = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * Clients of both tenants over one limiter of 10 slots with the vuln-fetcher's slot hand-off (quotas off:
 * the simulator's are off too); `slots` counts the slots the calls were given.
 */
function clientsSharingSlots(holdBackMs = 30_000) {
  const agent = createHttpsAgent({ extraCa: sim.caPem });
  const inner = createLocalLimiter({ maxConcurrent: 10 });
  const slots = { given: 0 };
  const limiter: CallLimiter = withSlotHandOff({
    schedule: (task) => inner.schedule((slotEnds) => task(slotEnds)),
    close: () => inner.close(),
  });
  const counted: CallLimiter = {
    schedule: (task) =>
      limiter.schedule((slotEnds) => {
        slots.given++;
        return task(slotEnds);
      }),
    close: () => limiter.close(),
  };
  const options = {
    agent,
    limiter: counted,
    quota: UNLIMITED_QUOTA_GATE,
    requestTimeoutMs: 1_000,
    retryPolicy: retryPolicy({ maxAttempts: 5, initialDelayMs: 10, maxDelayMs: 50 }),
    // Slow from 750 ms, not a quarter of the 1 s timeout: a loaded test machine must not make the healthy
    // tenant's 20 ms calls look slow (and cap its calls in flight); a call that runs out of time still is.
    health: { holdBackMs, slowCallMs: 750 },
  };
  const a = simClient(sim, failing, options);
  const b = simClient(sim, healthy, options);
  return {
    a: a.client,
    b: b.client,
    slots,
    async close() {
      a.client.close();
      b.client.close();
      await limiter.close();
      agent.destroy();
    },
  };
}

describe('per-device calls of two tenants sharing the call slots', () => {
  it('a tenant whose API hangs should hold the slots for one round of timeouts at most, make no retries, and leave the rest to the other tenant', async () => {
    const { a, b, close } = clientsSharingSlots();
    try {
      const healthyIds = (await b.listMachines()).map((machine) => machine.record.id);
      sim.setFaults(failing.azureTenantId, { timeoutRate: 1 });
      sim.resetStats();
      // Two batches of the failing tenant, 10 calls each, then the healthy tenant's batch behind them.
      const failingCalls = perDevice(
        a,
        Array.from({ length: 20 }, (_, i) => `device-${i}`),
        20,
      );
      await until(() => sim.stats().inFlightByTenant[failing.azureTenantId] === 10, 'the first 10 calls');
      const healthyResults = await perDevice(b, healthyIds.slice(0, 20), 10);
      const failingCallsWhenHealthyDone = callsOf(failing);
      const failingResults = await failingCalls;

      expect(healthyResults.filter((result) => result.status === 'rejected')).toEqual([]);
      // The first 10 calls, and at most the two that took the slots of its first two timeouts, were sent:
      // the failing tenant's calls queued before the healthy tenant's went one at a time, then not at all.
      expect(failingCallsWhenHealthyDone).toBeLessThanOrEqual(12);
      expect(callsOf(failing)).toBe(failingCallsWhenHealthyDone);
      const errors = failingResults.map((result) => (result as PromiseRejectedResult).reason as Error);
      expect(failingResults.every((result) => result.status === 'rejected')).toBe(true);
      expect(
        errors.every((error) => (error as { code?: string }).code === DefenderErrorCode.UNAVAILABLE),
      ).toBe(true);
      const heldBack = errors.filter((error) => CallHealth.isHeldBack(error));
      expect(heldBack.length).toBeGreaterThanOrEqual(10);
      expect(heldBack[0]?.message).toMatch(
        new RegExp(
          `^The Defender API of tenant ${failing.azureTenantId} failed \\d+ calls in a row \\(last: no answer within 1 s\\); its calls are held back until \\S+Z, then one is tried again$`,
        ),
      );
    } finally {
      await close();
    }
  });

  it('a tenant whose API trickles its answers should have each call stopped at the request timeout, not at its slot’s end', async () => {
    const { a, close } = clientsSharingSlots();
    try {
      sim.setFaults(failing.azureTenantId, { slowBodyRate: 1 });
      const error = await a.getMachineVulnerabilities('device-0').then(
        () => undefined,
        (failure: unknown) => failure as Error & { code?: string },
      );
      expect(error?.code).toBe(DefenderErrorCode.UNAVAILABLE);
      // Five attempts of 1 s each: the last one says why.
      expect(CallHealth.isHeldBack(error)).toBe(false);
      expect(error?.message).toBe(
        `The Defender API did not answer tenant ${failing.azureTenantId} on /api/machines/device-0/vulnerabilities within 1 s (ECONNABORTED)`,
      );
    } finally {
      await close();
    }
  });

  it("a tenant whose API answers again after a hold-back should have its calls let out again, up to the slots' limit", async () => {
    const { a, close } = clientsSharingSlots(300);
    try {
      const ids = (await a.listMachines()).map((machine) => machine.record.id);
      sim.setFaults(failing.azureTenantId, { timeoutRate: 1 });
      const failed = await perDevice(a, ids.slice(0, 10), 10);
      expect(failed.every((result) => result.status === 'rejected')).toBe(true);
      await expect(a.getMachineVulnerabilities(ids[0] as string)).rejects.toThrow(/held back until/);

      sim.setFaults(failing.azureTenantId, {});
      await new Promise((resolve) => setTimeout(resolve, 300));
      await expectCallsLetOut(a, ids);
    } finally {
      await close();
    }
  });

  it('a passing blip of failures that come at once (503s) should neither slow nor hold back a tenant', async () => {
    const { a, close } = clientsSharingSlots();
    try {
      const ids = (await a.listMachines()).map((machine) => machine.record.id);
      sim.setFaults(failing.azureTenantId, { status5xxRate: 1 });
      // 10 calls of 5 attempts each: 50 failures in a row, each in a moment.
      const failed = await perDevice(a, ids.slice(0, 10), 10);
      const errors = failed.map((result) => (result as PromiseRejectedResult).reason as Error);
      for (const error of errors)
        expect(error.message).toMatch(
          new RegExp(
            `^The Defender API answered 50[03] for tenant ${failing.azureTenantId} on /api/machines/`,
          ),
        );
      expect(errors.some((error) => CallHealth.isHeldBack(error))).toBe(false);

      sim.setFaults(failing.azureTenantId, {});
      await expectCallsLetOut(a, ids);
    } finally {
      await close();
    }
  });

  it('a call stopped while it waits for its turn should end at once, unsent, without asking for slots over and over', async () => {
    const { a, slots, close } = clientsSharingSlots();
    try {
      sim.setFaults(failing.azureTenantId, { timeoutRate: 1 });
      // A call whose 5 attempts run out of time: the tenant's calls now go one at a time (not held back yet).
      await expect(a.getMachineVulnerabilities('device-0')).rejects.toThrow(/within 1 s \(ECONNABORTED\)$/);
      // Its last attempt's request ended at the simulator too (its socket's close comes after the client gave
      // up): the call in flight below is device-3's, not that one.
      await until(
        () => (sim.stats().inFlightByTenant[failing.azureTenantId] ?? 0) === 0,
        'the attempts closed',
      );
      sim.resetStats();
      const inFlight = a.getMachineVulnerabilities('device-3').catch((error: Error) => error);
      await until(() => sim.stats().inFlightByTenant[failing.azureTenantId] === 1, 'the call in flight');
      const stop = new AbortController();
      const waiting = a.getMachineVulnerabilities('device-4', stop.signal).catch((error: Error) => error);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const slotsBefore = slots.given;
      stop.abort();
      const stopped = await waiting;
      expect(stopped).toMatchObject({
        code: DefenderErrorCode.UNAVAILABLE,
        message: `A vulnerabilities call to the Defender API of tenant ${failing.azureTenantId} was stopped before it was sent`,
      });
      // Ended while the call ahead of it still hangs, having asked for no slot in a loop.
      expect(sim.stats().inFlightByTenant[failing.azureTenantId]).toBe(1);
      expect(slots.given - slotsBefore).toBeLessThanOrEqual(1);
      expect(sim.stats().callsByTenant[failing.azureTenantId]?.vulnerabilities).toBe(1);
      await inFlight;
    } finally {
      await close();
    }
  });
});
