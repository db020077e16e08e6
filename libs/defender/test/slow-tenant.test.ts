import { getEventListeners, setMaxListeners } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { silentLogger } from '@urs/logging';
import { retryPolicy } from '@urs/resilience';
import {
  CallHealth,
  type ApiCaller,
  createApiCaller,
  createHttpsAgent,
  createLocalLimiter,
  UNLIMITED_QUOTA_GATE,
} from '../src';

/**
 * Two tenants sharing the 10 call slots, one whose API answers (or fails) slowly but within the request
 * timeout, as a vuln-fetcher runs them: the slow tenant's two batches of 10 device calls must not keep most
 * of the slots, so the other tenant's batch is done about as fast as alone.
 */
jest.setTimeout(30_000);

/** The request timeout of both tenants: calls that hold their slot a quarter of it or longer are slow. */
const REQUEST_TIMEOUT_MS = 1_000;
/**
 * How long the slow tenant's API takes to answer: well within the request timeout (under half of it), far
 * above the healthy tenant's 10 ms.
 */
const SLOW_MS = 400;
const HEALTHY_DEVICES = 100;
/** The slow tenant's callers: its two batches of 10 device calls, as a vuln-fetcher runs them. */
const SLOW_CALLERS = 20;

interface Served {
  /** Per tenant, the calls in flight at the server. */
  inFlight: Record<'slow' | 'healthy', number>;
  /** The most calls of the healthy tenant in flight at once. */
  healthyPeak: number;
  /** The most calls of the slow tenant in flight at once. */
  slowPeak: number;
  /** At each healthy call's arrival, the slow tenant's calls in flight and answered so far. */
  slowAtHealthy: { inFlight: number; answered: number }[];
  /** The slow tenant's calls answered. */
  slowAnswered: number;
  apiBase: (tenant: 'slow' | 'healthy') => string;
  close: () => Promise<void>;
}

/** The slow tenant's first round: its first calls, one per call slot, all in flight before any is answered. */
const SLOW_ROUND = 10;

/**
 * An API whose `slow` tenant answers `slowStatus` after SLOW_MS and whose `healthy` one answers 200 after
 * `healthyMs`; the healthy tenant's first `gatherHealthy` calls are answered together, once all of them are
 * in flight (500 ms after the first at the latest).
 *
 * The slow tenant's first SLOW_ROUND calls are answered together SLOW_MS after the last of them arrived,
 * none later than 900 ms after its own arrival (within the 1 s request timeout): a loaded machine sends them
 * further apart than SLOW_MS, and answered one by one, the first would come back (and slow the tenant down)
 * before the last was sent, so that the round never held every slot at once.
 */
async function serve(slowStatus: 200 | 503, healthyMs = 10, gatherHealthy = 0): Promise<Served> {
  const gathered: (() => void)[] = [];
  let gatherBound: NodeJS.Timeout | undefined;
  const answerGathered = (): void => {
    clearTimeout(gatherBound);
    for (const answer of gathered.splice(0)) answer();
  };
  let slowArrived = 0;
  const slowRound: { answer: () => void; bound: NodeJS.Timeout }[] = [];
  let slowRoundTimer: NodeJS.Timeout | undefined;
  const answerSlowRound = (): void => {
    for (const { answer, bound } of slowRound.splice(0)) {
      clearTimeout(bound);
      answer();
    }
  };
  const server = createServer((req, res) => {
    const tenant = req.url?.startsWith('/slow/') ? 'slow' : 'healthy';
    if (tenant === 'healthy')
      served.slowAtHealthy.push({ inFlight: served.inFlight.slow, answered: served.slowAnswered });
    served.inFlight[tenant]++;
    served.healthyPeak = Math.max(served.healthyPeak, served.inFlight.healthy);
    served.slowPeak = Math.max(served.slowPeak, served.inFlight.slow);
    const status = tenant === 'slow' ? slowStatus : 200;
    let over = false;
    const answer = (): void => {
      if (over) return;
      over = true;
      served.inFlight[tenant]--;
      if (tenant === 'slow') served.slowAnswered++;
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(status === 200 ? { value: [] } : { error: { code: 'ServiceUnavailable' } }));
    };
    let timer: NodeJS.Timeout | undefined;
    if (tenant === 'healthy' && served.slowAtHealthy.length <= gatherHealthy) {
      gathered.push(answer);
      if (gathered.length === gatherHealthy) answerGathered();
      else gatherBound ??= setTimeout(answerGathered, 500);
    } else if (tenant === 'slow' && ++slowArrived <= SLOW_ROUND) {
      slowRound.push({ answer, bound: setTimeout(answer, REQUEST_TIMEOUT_MS - 100) });
      if (slowArrived === SLOW_ROUND) slowRoundTimer = setTimeout(answerSlowRound, SLOW_MS);
    } else timer = setTimeout(answer, tenant === 'slow' ? SLOW_MS : healthyMs);
    // A call stopped by its caller is no longer in flight.
    res.on('close', () => {
      if (over) return;
      over = true;
      clearTimeout(timer);
      served.inFlight[tenant]--;
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const served: Served = {
    inFlight: { slow: 0, healthy: 0 },
    healthyPeak: 0,
    slowPeak: 0,
    slowAtHealthy: [],
    slowAnswered: 0,
    apiBase: (tenant) => `http://127.0.0.1:${port}/${tenant}`,
    close: () =>
      new Promise<void>((resolve) => {
        clearTimeout(gatherBound);
        clearTimeout(slowRoundTimer);
        for (const { bound } of slowRound) clearTimeout(bound);
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return served;
}

/** Each tenant's calls over one limiter of 10 slots, as the vuln-fetcher's tenants share it. */
function callersSharingSlots(served: Served) {
  const limiter = createLocalLimiter({ maxConcurrent: 10 });
  const agent = createHttpsAgent();
  const caller = (tenant: 'slow' | 'healthy'): ApiCaller =>
    createApiCaller({
      azureTenantId: tenant,
      clientId: 'app',
      apiBase: served.apiBase(tenant),
      tokens: {
        getToken: async () => ({ token: 'x', expiresOnTimestamp: Date.now() + 3_600_000 }),
        refreshToken: async () => ({ token: 'x', expiresOnTimestamp: Date.now() + 3_600_000 }),
      },
      limiter,
      quota: UNLIMITED_QUOTA_GATE,
      httpsAgent: agent,
      retryPolicy: retryPolicy({ maxAttempts: 5, initialDelayMs: 10, maxDelayMs: 50 }),
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      maxThrottleWaitMs: 0,
      logger: silentLogger,
    });
  return {
    slow: caller('slow'),
    healthy: caller('healthy'),
    async close() {
      await limiter.close();
      agent.destroy();
    },
  };
}

async function until(check: () => boolean, what: string): Promise<void> {
  const giveUpAt = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * The slow tenant's two batches (20 callers, each asking for one device after the other until stopped) hold
 * all 10 slots (a batch ends at its first call held back, as the vuln-fetcher's does); then the healthy tenant's batch of HEALTHY_DEVICES devices runs with 10 callers. Resolves how
 * long that batch took and how the slow tenant's calls ended.
 */
async function healthyBesideSlow(
  served: Served,
  callers: ReturnType<typeof callersSharingSlots>,
): Promise<{ slowResults: PromiseSettledResult<unknown>[] }> {
  const stop = new AbortController();
  // Each call in flight listens to the callers' signal (while it waits for its turn or its slot, is sent,
  // or waits to be retried) and lets go of it when it ends: up to SLOW_CALLERS listeners at once, above
  // Node's default limit of 10, as the vuln-fetcher raises it for a batch's signal.
  setMaxListeners(SLOW_CALLERS, stop.signal);
  const slowResults: PromiseSettledResult<unknown>[] = [];
  const slowWorkers = Array.from({ length: SLOW_CALLERS }, async (_, worker) => {
    for (let i = 0; !stop.signal.aborted; i++) {
      const [result] = await Promise.allSettled([
        callers.slow.get(
          'vulnerabilities',
          `/api/machines/s${worker}-${i}/vulnerabilities`,
          undefined,
          stop.signal,
        ),
      ]);
      if (!stop.signal.aborted) slowResults.push(result as PromiseSettledResult<unknown>);
      // Held back, the tenant's batch ends, as in the vuln-fetcher.
      if (result?.status === 'rejected' && CallHealth.isHeldBack(result.reason)) break;
    }
  });
  // Seen by the server, not by polling: the round may be answered before a loaded machine runs this check.
  await until(() => served.slowPeak === SLOW_ROUND, "the slow tenant's first 10 calls in flight at once");
  let next = 0;
  await Promise.all(
    Array.from({ length: 10 }, async () => {
      while (next < HEALTHY_DEVICES) {
        next++;
        await callers.healthy.get('vulnerabilities', `/api/machines/h${next}/vulnerabilities`);
      }
    }),
  );
  stop.abort();
  await Promise.all(slowWorkers);
  return { slowResults };
}

/** The most calls the slow tenant had in flight when a healthy call arrived, once its first 10 were answered. */
function mostInFlightAfterFirstRound(served: Served): number {
  const after = served.slowAtHealthy.filter((seen) => seen.answered >= 10);
  // Most of the healthy batch, not only its tail, came after that round.
  expect(after.length).toBeGreaterThanOrEqual(HEALTHY_DEVICES / 2);
  return Math.max(...after.map((seen) => seen.inFlight));
}

describe('per-device calls of two tenants sharing the call slots, one tenant’s API slow', () => {
  it('a tenant whose API answers slowly should keep at most 2 of the 10 slots after its first round, its answers still taken', async () => {
    const served = await serve(200);
    const callers = callersSharingSlots(served);
    try {
      const { slowResults } = await healthyBesideSlow(served, callers);
      // Once its first round of 10 calls is answered, the slow tenant has 2 calls in flight at most (the 2 it
      // sent in that round before its third slow answer, then 2 at a time).
      expect(served.slowAtHealthy.length).toBe(HEALTHY_DEVICES);
      expect(mostInFlightAfterFirstRound(served)).toBeLessThanOrEqual(2);
      // The healthy batch waited for about one round of slow calls, not for the ~140 it waited for when the
      // slow tenant kept every slot (a count, not a time: a loaded machine answers both tenants later).
      expect(served.slowAnswered).toBeLessThan(60);
      // The slow tenant's answers are good data: none of its calls failed, and it kept being answered.
      expect(slowResults.filter((result) => result.status === 'rejected')).toEqual([]);
      expect(served.slowAnswered).toBeGreaterThanOrEqual(10);
    } finally {
      await callers.close();
      await served.close();
    }
  });

  it('a tenant whose API fails slowly (503 after a while) should go one at a time, then be held back', async () => {
    const served = await serve(503);
    const callers = callersSharingSlots(served);
    try {
      const { slowResults } = await healthyBesideSlow(served, callers);
      // Its calls go one at a time after 3 slow failures (besides the 2 sent before), then not at all.
      expect(mostInFlightAfterFirstRound(served)).toBeLessThanOrEqual(2);
      expect(served.slowAnswered).toBeLessThan(60);
      const errors = slowResults.map((result) => (result as PromiseRejectedResult).reason as unknown);
      expect(slowResults.every((result) => result.status === 'rejected')).toBe(true);
      expect(errors.some((error) => CallHealth.isHeldBack(error))).toBe(true);
    } finally {
      await callers.close();
      await served.close();
    }
  });

  it.each([200, 503] as const)(
    'calls sharing one long-lived signal should listen to it only while in flight, none once ended (slow %s)',
    async (slowStatus) => {
      const served = await serve(slowStatus);
      const callers = callersSharingSlots(served);
      // A service's own stop signal: never aborted here, so only the calls' own ends take their listeners off.
      const service = new AbortController();
      setMaxListeners(SLOW_CALLERS, service.signal);
      let inFlight = 0;
      let mostAboveInFlight = -Infinity;
      const look = (): void => {
        const listeners = getEventListeners(service.signal, 'abort').length;
        mostAboveInFlight = Math.max(mostAboveInFlight, listeners - inFlight);
      };
      const looking = setInterval(look, 1);
      try {
        await Promise.all(
          Array.from({ length: SLOW_CALLERS }, async (_, worker) => {
            for (let i = 0; i < 2; i++) {
              inFlight++;
              look();
              await callers.slow
                .get(
                  'vulnerabilities',
                  `/api/machines/s${worker}-${i}/vulnerabilities`,
                  undefined,
                  service.signal,
                )
                .catch(() => undefined);
              look();
              inFlight--;
            }
          }),
        );
        // Some calls waited for the tenant's turn (after its first round, 2 or 1 at a time).
        expect(served.slowAnswered).toBeGreaterThanOrEqual(10);
        expect(mostAboveInFlight).toBeLessThanOrEqual(0);
        expect(getEventListeners(service.signal, 'abort')).toHaveLength(0);
      } finally {
        clearInterval(looking);
        await callers.close();
        await served.close();
      }
    },
  );

  it('a tenant alone whose calls are answered fast should have all 10 slots', async () => {
    // The benchmark's latency. The first 10 calls are answered together: on a loaded machine they may reach
    // the API further apart than the 50 ms an answer takes, and would not all be in flight at once.
    const served = await serve(200, 50, 10);
    const callers = callersSharingSlots(served);
    try {
      let next = 0;
      await Promise.all(
        Array.from({ length: 15 }, async () => {
          while (next < HEALTHY_DEVICES) {
            next++;
            await callers.healthy.get('vulnerabilities', `/api/machines/h${next}/vulnerabilities`);
          }
        }),
      );
      expect(served.healthyPeak).toBe(10);
    } finally {
      await callers.close();
      await served.close();
    }
  });
});
