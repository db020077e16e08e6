import {
  CallHealth,
  DegradedCalls,
  createHttpsAgent,
  createLocalLimiter,
  createLocalQuotaGate,
} from '@urs/defender';
import { type Simulator, startSimulator } from '@urs/simulator';
import { waitFor } from '@urs/testkit';
import { createBatchFit } from '../src/batch-fit';
import { runCycle } from '../src/cycle';
import type { DefenderGateway } from '../src/defender';
import { unsentCycleDeps } from './support/cycle';
import { addSimTenants, simGateway, simRecord, simTenant } from './support/sim-gateway';
import type { Scheduler } from '../src/scheduler';
import { sampleOf, startOnePlaceReplica } from './support/scheduler';

// The scheduler with the real cycle and Defender client against the simulator: a degraded tenant (its last call
// failed slowly) whose listing waits for one of the places of degraded tenants' calls, all taken by other
// degraded tenants' calls (each up to a whole request timeout, one after the other), must not keep a cycle
// place for as long: healthy tenants due meanwhile would find none.
describe('poller: a degraded tenant waiting for a place among the degraded tenants’ calls', () => {
  let sim: Simulator;
  let gateway: DefenderGateway;
  let scheduler: Scheduler | undefined;
  const limiter = createLocalLimiter();
  // One place, taken by another degraded tenant's call that hangs for the whole test.
  const degradedCalls = new DegradedCalls(1);
  const elsewhere = new CallHealth('elsewhere', { degradedCalls });
  let agent: ReturnType<typeof createHttpsAgent>;
  const tenants = ['failing', 'healthy'].map(simTenant);

  beforeAll(async () => {
    sim = await startSimulator({ quotas: false });
    addSimTenants(sim, tenants);
    // The failing tenant's API never answers: its first call, out of time, makes it degraded, and the retry
    // waits for the one place among the degraded tenants' calls.
    sim.setFaults((tenants[0] as (typeof tenants)[number]).azureTenantId, { timeoutRate: 1 });
    expect(elsewhere.start()).toBe(true);
    elsewhere.leave('failed', 'no answer within 30 s');
    expect(elsewhere.start()).toBe(true);
    agent = createHttpsAgent({ extraCa: sim.caPem });
    gateway = simGateway(sim, agent, limiter, {
      quota: createLocalQuotaGate(),
      requestTimeoutMs: 1_000,
      maxQuotaWaitMs: 200,
      health: { degradedCalls },
    });
  });

  afterAll(async () => {
    elsewhere.leave('answered');
    await scheduler?.close(100);
    gateway?.close();
    await limiter.close();
    agent?.destroy();
    await sim?.close();
  });

  it('its cycle should end as throttled once it waited URS_POLL_MAX_QUOTA_WAIT_MS, freeing its place for a healthy tenant', async () => {
    // One place: the failing tenant, first in the table, takes it first.
    const made = await startOnePlaceReplica(
      tenants.map((tenant) => simRecord(tenant)),
      async (input) => void (await runCycle(unsentCycleDeps(gateway, createBatchFit()), input)),
    );
    ({ scheduler } = made);
    const { schedules, status, runs, metrics, started } = made;
    // The place among the degraded tenants' calls stays taken: the healthy tenant gets the one cycle place only
    // if the failing tenant's cycle gave it up.
    await waitFor(() => runs.some((run) => run.tenantId === 'healthy'), { timeoutMs: 15_000 });
    expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="throttled"}')).toBe(1);
    expect(status.statuses.get('failing')).toMatchObject({
      state: 'error',
      lastErrorCode: 'DEFENDER_THROTTLED',
      lastErrorMessage: expect.stringMatching(
        /was not sent: it waited 200 ms in all, as long as it may, for one of the 1 places kept for the calls of tenants whose last call failed slowly \(this tenant's did\), all taken by their calls \(queued [^)]+ ago\)/,
      ),
    });
    // Tried again a minute on, as a throttled tenant is, not at once.
    const schedule = await schedules.get('failing');
    expect(schedule.notBefore).toBeGreaterThanOrEqual(started + 60_000);
    expect(runs.filter((run) => run.tenantId === 'failing')).toEqual([]);
  }, 30_000);
});
