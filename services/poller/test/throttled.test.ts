import { createHttpsAgent, createLocalLimiter, createLocalQuotaGate } from '@urs/defender';
import { type Simulator, startSimulator } from '@urs/simulator';
import { Registry } from '@urs/telemetry';
import { waitFor } from '@urs/testkit';
import { runCycle } from '../src/cycle';
import type { DefenderGateway } from '../src/defender';
import { fitAfterTaking, unsentCycleDeps } from './support/cycle';
import { addSimTenants, simGateway, simRecord, simTenant } from './support/sim-gateway';
import type { Scheduler } from '../src/scheduler';
import {
  feed,
  memorySchedules,
  memoryStatus,
  replica,
  sampleOf,
  sleep,
  startOnePlaceReplica,
} from './support/scheduler';

// The scheduler with the real cycle and Defender client against the simulator: a tenant whose quota is
// blocked for an hour (a 429's Retry-After of 3600, seen by any process) must not keep a cycle place.
describe('poller: a tenant throttled for longer than a cycle may wait', () => {
  let sim: Simulator;
  let gateway: DefenderGateway;
  let scheduler: Scheduler | undefined;
  const limiter = createLocalLimiter();
  const quota = createLocalQuotaGate();
  let agent: ReturnType<typeof createHttpsAgent>;
  const tenants = ['blocked', 'healthy'].map(simTenant);

  // Polled once a day, its poll interval's unit a real minute.
  const daily = simTenant('daily');

  // Its quota counters gone with a wiped Redis (a gate counting nothing), while Microsoft still counts its calls.
  const counted = simTenant('counted');

  const cycleDeps = () => unsentCycleDeps(gateway, fitAfterTaking());

  beforeAll(async () => {
    sim = await startSimulator({ quotas: false });
    addSimTenants(sim, [...tenants, daily, counted]);
    agent = createHttpsAgent({ extraCa: sim.caPem });
    gateway = simGateway(sim, agent, limiter, {
      quota,
      requestTimeoutMs: 5_000,
      maxQuotaWaitMs: 200,
    });
  });

  afterAll(async () => {
    await scheduler?.close(100);
    gateway?.close();
    await limiter.close();
    agent?.destroy();
    await sim?.close();
  });

  it("a blocked tenant's cycle should end at once as throttled, freeing its place for another tenant, and be tried again when the block ends", async () => {
    const blocked = tenants[0] as (typeof tenants)[number];
    await quota.block(blocked, 'machines', 3_600_000);
    // One place: the blocked tenant, first in the table, takes it first. Its lease no slower process can lose
    // while the cycle meets the block (a lost lease frees the place too).
    const made = await startOnePlaceReplica(
      tenants.map((tenant) => simRecord(tenant)),
      async (input) => void (await runCycle(cycleDeps(), input)),
    );
    ({ scheduler } = made);
    const { schedules, status, runs, metrics, started } = made;
    // The block lasts an hour: the healthy tenant gets the one place only if the blocked cycle gave it up.
    await waitFor(() => runs.some((run) => run.tenantId === 'healthy'), { timeoutMs: 10_000 });
    expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="throttled"}')).toBe(1);
    const blockedStatus = status.statuses.get('blocked');
    expect(blockedStatus).toMatchObject({ state: 'error', lastErrorCode: 'DEFENDER_THROTTLED' });
    // Tried again once the block ends (an hour on), not at its next interval: it would find the block again.
    const schedule = await schedules.get('blocked');
    expect(schedule.notBefore).toBeGreaterThan(started + 3_590_000);
    expect(schedule.notBefore).toBeLessThanOrEqual(Date.now() + 3_600_000);
    expect(runs.filter((run) => run.tenantId === 'blocked')).toEqual([]);
  }, 20_000);

  /**
   * One replica with the real cycle, its poll interval's unit a real minute, on a clock the test moves on
   * (`clock.skewMs`; the quota's blocks keep to the real one): when each attempt began, by that clock.
   */
  function skewedReplica() {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const attempts: number[] = [];
    const metrics = new Registry();
    const clock = { skewMs: 0, now: (): number => Date.now() + clock.skewMs };
    const made = replica(
      0,
      schedules,
      status,
      [],
      async (input) => {
        attempts.push(clock.now());
        await runCycle(cycleDeps(), input);
      },
      { metrics, intervalUnitMs: 60_000, now: clock.now, leaseMs: 10_000 },
    );
    return { made, schedules, status, attempts, metrics, clock };
  }

  it('a tenant throttled for less than its interval should be tried again when its quota frees, not at its next interval', async () => {
    // A daily tenant whose quota is blocked for 90 s: longer than the cycle may wait for it, far shorter than a day.
    await quota.block(daily, 'machines', 90_000);
    const { made, status, attempts, metrics, clock } = skewedReplica();
    try {
      await feed(made.table, [simRecord(daily, 1440)]);
      const started = Date.now();
      made.scheduler.start();
      await waitFor(() => sampleOf(metrics, 'urs_poll_cycles_total{outcome="throttled"}') === 1, {
        timeoutMs: 10_000,
      });
      await waitFor(() => status.statuses.get('daily')?.nextPollAt !== undefined, { timeoutMs: 5_000 });
      // The status says when: as the block ends, 90 s on, not a day on.
      const nextPollAt = Date.parse(String(status.statuses.get('daily')?.nextPollAt));
      expect(nextPollAt).toBeGreaterThanOrEqual(started + 89_000);
      expect(nextPollAt).toBeLessThanOrEqual(Date.now() + 90_000);
      expect(attempts).toHaveLength(1);
      // Once the block's 90 s are over by the scheduler's clock, the tenant is tried again.
      clock.skewMs = 91_000;
      await waitFor(() => attempts.length === 2, { timeoutMs: 5_000 });
      expect((attempts[1] as number) - (attempts[0] as number)).toBeLessThan(120_000);
    } finally {
      await made.scheduler.close(100);
    }
  }, 30_000);

  it("a tenant Microsoft answers 429 with Retry-After, its quota counters lost, should be held back until the Retry-After's end", async () => {
    // The gate has no count of the tenant's calls (Redis wiped): only Microsoft's 429 says its quota is spent.
    sim.setFaults(counted.azureTenantId, { throttledCalls: 1, throttleRetryAfterSec: 600 });
    const { made, schedules, attempts, metrics, clock } = skewedReplica();
    try {
      await feed(made.table, [simRecord(counted, 5)]);
      const started = Date.now();
      made.scheduler.start();
      await waitFor(() => sampleOf(metrics, 'urs_poll_cycles_total{outcome="throttled"}') === 1, {
        timeoutMs: 10_000,
      });
      // The 429's wait holds back the tenant's next cycle, past its 5-minute interval...
      const schedule = await schedules.get('counted');
      expect(schedule.notBefore).toBeGreaterThanOrEqual(started + 599_000);
      expect(schedule.notBefore).toBeLessThanOrEqual(Date.now() + 600_000);
      // ... and every call of the tenant, in every process sharing the gate, for as long.
      const held = await quota.acquire(counted, 'machines', undefined, 0).catch((error: unknown) => error);
      expect(held).toMatchObject({ code: 'DEFENDER_THROTTLED' });
      expect((held as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(590_000);
      // One call drew the 429, and no cycle came before the wait was over: at its interval's end, none.
      clock.skewMs = 6 * 60_000;
      await sleep(300);
      expect(attempts).toHaveLength(1);
      expect(sim.stats().callsByTenant[counted.azureTenantId]?.['machines']).toBe(1);
      // Once it is over, tried again.
      clock.skewMs = 601_000;
      await waitFor(() => attempts.length === 2, { timeoutMs: 5_000 });
    } finally {
      await made.scheduler.close(100);
    }
  }, 30_000);
});
