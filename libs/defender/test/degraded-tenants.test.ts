import { setMaxListeners } from 'node:events';
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
 * Several tenants failing together (a regional Defender host or an egress path that stops answering for all
 * of them) beside a healthy one, over one process's 10 call slots: each failing tenant alone is held to one
 * call at a time, but together they would keep every slot, each call for a whole request timeout.
 */
jest.setTimeout(30_000);

const HANGING_TENANTS = 10;
const HEALTHY_DEVICES = 100;

interface Served {
  /** Calls of the hanging tenants in flight now, all of them together. */
  hangingInFlight: number;
  /** Calls of the hanging tenants that ran out of time (their caller closed them unanswered). */
  hangingTimedOut: number;
  /** Per hanging tenant, whether one of its calls ran out of time. */
  hangingFailed: Set<string>;
  /** At each healthy call's arrival, the hanging tenants' calls in flight and timed out so far. */
  hangingAtHealthy: { inFlight: number; timedOut: number }[];
  /** Calls of the `failing` tenant (503 after `failingMs`). */
  failingCalls: number;
  apiBase: (tenant: string) => string;
  close: () => Promise<void>;
}

/**
 * An API whose tenants `hang-<n>` never answer, whose tenant `healthy` answers 200 after 10 ms and whose
 * tenant `failing` answers 503 after `failingMs`.
 */
async function serve(failingMs = 0): Promise<Served> {
  const timers = new Set<NodeJS.Timeout>();
  const server = createServer((req, res) => {
    const tenant = req.url?.split('/')[1] ?? '';
    if (tenant.startsWith('hang-')) {
      served.hangingInFlight++;
      res.on('close', () => {
        served.hangingInFlight--;
        served.hangingTimedOut++;
        served.hangingFailed.add(tenant);
      });
      return;
    }
    if (tenant === 'healthy')
      served.hangingAtHealthy.push({ inFlight: served.hangingInFlight, timedOut: served.hangingTimedOut });
    else served.failingCalls++;
    const status = tenant === 'healthy' ? 200 : 503;
    const timer = setTimeout(
      () => {
        timers.delete(timer);
        res.writeHead(status, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(status === 200 ? { value: [] } : { error: { code: 'ServiceUnavailable' } }));
      },
      tenant === 'healthy' ? 10 : failingMs,
    );
    timers.add(timer);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const served: Served = {
    hangingInFlight: 0,
    hangingTimedOut: 0,
    hangingFailed: new Set(),
    hangingAtHealthy: [],
    failingCalls: 0,
    apiBase: (tenant) => `http://127.0.0.1:${port}/${tenant}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const timer of timers) clearTimeout(timer);
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return served;
}

/** Callers of any tenant over one limiter of 10 slots, with the process's own call health defaults. */
function callersSharingSlots(served: Served, requestTimeoutMs: number) {
  const limiter = createLocalLimiter({ maxConcurrent: 10 });
  const agent = createHttpsAgent();
  const caller = (tenant: string): ApiCaller =>
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
      requestTimeoutMs,
      maxThrottleWaitMs: 0,
      logger: silentLogger,
    });
  return {
    caller,
    async close() {
      await limiter.close();
      agent.destroy();
    },
  };
}

async function until(check: () => boolean, what: string): Promise<void> {
  const giveUpAt = Date.now() + 15_000;
  while (!check()) {
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('calls of several failing tenants beside a healthy one, sharing the call slots', () => {
  it('tenants whose API hangs together should share 2 of the slots once each failed, leaving the rest to the healthy tenant', async () => {
    const served = await serve();
    const { caller, close } = callersSharingSlots(served, 1_000);
    const stop = new AbortController();
    setMaxListeners(HANGING_TENANTS * 2, stop.signal);
    try {
      // Each hanging tenant asks one thing after the other (a listing's pages, a device at a time), its calls
      // retried, until stopped or held back.
      const hanging = Array.from({ length: HANGING_TENANTS }, async (_, n) => {
        const api = caller(`hang-${n}`);
        for (let i = 0; !stop.signal.aborted; i++) {
          const [result] = await Promise.allSettled([
            api.get('machines', `/api/machines?page=${i}`, undefined, stop.signal),
          ]);
          if (result?.status === 'rejected' && CallHealth.isHeldBack(result.reason)) break;
        }
      });
      // The first round: one call of each, all slots held until each has run out of time once.
      await until(() => served.hangingFailed.size === HANGING_TENANTS, 'each hanging tenant’s first timeout');
      const healthy = caller('healthy');
      const timedOutBefore = served.hangingTimedOut;
      let next = 0;
      await Promise.all(
        Array.from({ length: 10 }, async () => {
          while (next < HEALTHY_DEVICES) {
            next++;
            await healthy.get('vulnerabilities', `/api/machines/h${next}/vulnerabilities`);
          }
        }),
      );
      const timedOutDuring = served.hangingTimedOut - timedOutBefore;
      stop.abort();
      await Promise.all(hanging);

      expect(served.hangingAtHealthy).toHaveLength(HEALTHY_DEVICES);
      // The failing tenants' calls together held 2 slots at most while the healthy tenant's calls came.
      expect(Math.max(...served.hangingAtHealthy.map((seen) => seen.inFlight))).toBeLessThanOrEqual(2);
      // The healthy batch did not wait for the hanging calls' timeouts, one slot freed by each, as it did when
      // they kept every slot (30 to 47 of them ran out meanwhile). A count, not a time: the 2 places' 1 s
      // timeouts may run out a few times while a loaded machine answers 100 calls.
      expect(timedOutDuring).toBeLessThan(10);
    } finally {
      stop.abort();
      await close();
      await served.close();
    }
  });

  it('a tenant whose API fails with a 503 just under slowCallMs should be held back, its retries not made', async () => {
    // 1.9 s: under the 2 s of slowCallMs (a quarter of the 10 s request timeout, at most 2 s).
    const served = await serve(1_900);
    const { caller, close } = callersSharingSlots(served, 10_000);
    try {
      const failing = caller('failing');
      // A batch's 10 device calls at once: 10 failures in a row, each after 1.9 s.
      const results = await Promise.allSettled(
        Array.from({ length: 10 }, (_, n) =>
          failing.get('vulnerabilities', `/api/machines/d${n}/vulnerabilities`),
        ),
      );
      const errors = results.map((result) => (result as PromiseRejectedResult).reason as unknown);
      expect(results.every((result) => result.status === 'rejected')).toBe(true);
      expect(errors.some((error) => CallHealth.isHeldBack(error))).toBe(true);
      // The first round only: not 10 calls × 5 attempts, each holding a slot for 1.9 s.
      expect(served.failingCalls).toBeLessThanOrEqual(12);
    } finally {
      await close();
      await served.close();
    }
  });
});
