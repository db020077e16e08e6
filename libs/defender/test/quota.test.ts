import {
  DefenderErrorCode,
  MICROSOFT_QUOTAS,
  UNLIMITED_QUOTA_GATE,
  createLocalQuotaGate,
  createRedisQuotaGate,
  planVulnerabilityMode,
  quotaGateFor,
  type QuotaClaim,
} from '../src';
import { appOf } from './support';

/**
 * `promise` if it settles without waiting: the local gates answer a call that has room through promise
 * callbacks alone, before any timer (a poll, the next step of a clock) could run; one that waits rejects.
 */
function atOnce<T>(promise: Promise<T>): Promise<T> {
  const waited = new Promise<never>((_, reject) => setImmediate(() => reject(new Error('it waited'))));
  return Promise.race([promise, waited]);
}

/** Whether `acquire` is still waiting after a few polls. */
async function stillWaiting(acquire: Promise<unknown>): Promise<boolean> {
  let done = false;
  void acquire.then(() => (done = true));
  await new Promise((resolve) => setTimeout(resolve, 30));
  return !done;
}

describe('createLocalQuotaGate', () => {
  it('acquire should wait until the window frees once the limit is reached', async () => {
    let clock = 0;
    const gate = createLocalQuotaGate({
      limits: { ...MICROSOFT_QUOTAS, vulnerabilities: [{ limit: 3, windowMs: 300 }] },
      now: () => clock,
      maxPollMs: 5,
    });
    for (let i = 0; i < 3; i++) (await atOnce(gate.acquire(appOf('t1'), 'vulnerabilities'))).sent();
    const fourth = gate.acquire(appOf('t1'), 'vulnerabilities');
    clock = 299;
    expect(await stillWaiting(fourth)).toBe(true);
    clock = 300;
    await fourth;
  });

  it('acquire should count each tenant and endpoint on its own', async () => {
    const gate = createLocalQuotaGate({
      limits: {
        machines: [{ limit: 1, windowMs: 60_000 }],
        vulnerabilities: [{ limit: 1, windowMs: 60_000 }],
        bulk: [],
        exportFiles: [],
      },
      now: () => 0,
    });
    await atOnce(gate.acquire(appOf('t1'), 'machines'));
    await atOnce(gate.acquire(appOf('t2'), 'machines'));
    await atOnce(gate.acquire(appOf('t1'), 'vulnerabilities'));
  });

  it('acquire should count each app of one tenant on its own, as Microsoft counts per application and tenant', async () => {
    const gate = createLocalQuotaGate({
      limits: { ...MICROSOFT_QUOTAS, machines: [{ limit: 1, windowMs: 60_000 }] },
      now: () => 0,
    });
    (await atOnce(gate.acquire({ azureTenantId: 't1', clientId: 'a' }, 'machines'))).sent();
    (await atOnce(gate.acquire({ azureTenantId: 't1', clientId: 'b' }, 'machines'))).sent();
    await expect(
      gate.acquire({ azureTenantId: 't1', clientId: 'a' }, 'machines', undefined, 0),
    ).rejects.toMatchObject({ code: DefenderErrorCode.THROTTLED });
  });

  it("block should hold back only the app it is for, not the tenant's other apps", async () => {
    const gate = createLocalQuotaGate({ now: () => 0 });
    await gate.block({ azureTenantId: 't1', clientId: 'a' }, 'machines', 600_000);
    await atOnce(gate.acquire({ azureTenantId: 't1', clientId: 'b' }, 'machines'));
    await expect(
      gate.acquire({ azureTenantId: 't1', clientId: 'a' }, 'machines', undefined, 0),
    ).rejects.toMatchObject({ code: DefenderErrorCode.THROTTLED, retryAfterMs: 600_000 });
  });

  it('acquire should count a tenant and app written in two cases as one, as Microsoft does', async () => {
    let clock = 0;
    const gate = createLocalQuotaGate({
      limits: { ...MICROSOFT_QUOTAS, vulnerabilities: [{ limit: 1, windowMs: 300 }] },
      now: () => clock,
      maxPollMs: 5,
    });
    const lower = { azureTenantId: '5f2d6a9e-aaaa-bbbb-cccc-0123456789ab', clientId: '0d8f6b4e-1c2a-4e3b' };
    (await gate.acquire(lower, 'vulnerabilities')).sent();
    const upper = gate.acquire(
      { azureTenantId: lower.azureTenantId.toUpperCase(), clientId: lower.clientId.toUpperCase() },
      'vulnerabilities',
    );
    clock = 299;
    expect(await stillWaiting(upper)).toBe(true);
    clock = 300;
    await upper;
  });

  it('block should hold the endpoint back for the given time', async () => {
    let clock = 0;
    const gate = createLocalQuotaGate({ now: () => clock, maxPollMs: 5 });
    await gate.block(appOf('t1'), 'machines', 200);
    const acquire = gate.acquire(appOf('t1'), 'machines');
    clock = 199;
    expect(await stillWaiting(acquire)).toBe(true);
    clock = 200;
    await acquire;
  });

  it('acquire should stop waiting when the signal aborts', async () => {
    const gate = createLocalQuotaGate({
      limits: { ...MICROSOFT_QUOTAS, bulk: [{ limit: 1, windowMs: 60_000 }] },
    });
    await gate.acquire(appOf('t1'), 'bulk');
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    await expect(gate.acquire(appOf('t1'), 'bulk', controller.signal)).rejects.toMatchObject({
      code: 'DEFENDER_THROTTLED',
    });
  });
});

describe('createLocalQuotaGate at a deadline', () => {
  it("acquire stopped at its caller's deadline should say the tenant is held back by its quota, and for how long", async () => {
    const gate = createLocalQuotaGate({ maxPollMs: 20 });
    // A 429's Retry-After of 10 minutes, recorded by another call of the tenant.
    await gate.block(appOf('t1'), 'machines', 600_000);
    const error = await gate
      .acquire(appOf('t1'), 'machines', AbortSignal.timeout(100))
      .catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: 'DEFENDER_THROTTLED', canRetry: true });
    expect((error as Error).message).toMatch(
      /^Tenant t1's machines calls are held back by its API quota \(Microsoft's limits, or a 429's Retry-After\) for another (600|599) s: the call was not sent within the time allowed \(it waited \d+ ms\)$/,
    );
    expect((error as { retryAfterMs?: number }).retryAfterMs).toBeGreaterThan(599_000);
  });

  it('acquire queued behind another waiter and stopped at its deadline should say for how long the quota holds back', async () => {
    const gate = createLocalQuotaGate({ maxPollMs: 20 });
    await gate.block(appOf('t1'), 'machines', 600_000);
    const firstStops = new AbortController();
    const first = gate.acquire(appOf('t1'), 'machines', firstStops.signal).catch(() => undefined);
    const error = await gate
      .acquire(appOf('t1'), 'machines', AbortSignal.timeout(100))
      .catch((caught: unknown) => caught);
    expect((error as Error).message).toMatch(
      /^Tenant t1's machines calls are held back by its API quota \(Microsoft's limits, or a 429's Retry-After\) for another (600|599) s: the call was not sent within the time allowed/,
    );
    firstStops.abort();
    await first;
  });

  it('acquire stopped otherwise than at a deadline should say it was stopped, naming the tenant', async () => {
    const gate = createLocalQuotaGate({ maxPollMs: 20 });
    await gate.block(appOf('t1'), 'machines', 600_000);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const error = await gate
      .acquire(appOf('t1'), 'machines', controller.signal)
      .catch((caught: unknown) => caught);
    expect((error as Error).message).toBe(
      "A machines call of tenant t1 was stopped while waiting for the tenant's API quota",
    );
  });
});

describe('createLocalQuotaGate claims', () => {
  const oneAMinute = { ...MICROSOFT_QUOTAS, vulnerabilities: [{ limit: 1, windowMs: 60_000 }] };

  it('sent should count the call from when it went out, not from when it was taken', async () => {
    let clock = 0;
    const gate = createLocalQuotaGate({ limits: oneAMinute, now: () => clock, maxPollMs: 5 });
    const claim = await gate.acquire(appOf('t1'), 'vulnerabilities');
    // The call waited 20 s for a slot: Microsoft counts it from its arrival, and so does the gate.
    clock = 20_000;
    claim.sent();
    clock = 60_001;
    const next = gate.acquire(appOf('t1'), 'vulnerabilities');
    let done = false;
    void next.then(() => (done = true));
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(done).toBe(false);
    clock = 80_001;
    await next;
  });

  it('a call waiting for its slot should keep its place in the window until it is sent', async () => {
    let clock = 0;
    const gate = createLocalQuotaGate({ limits: oneAMinute, now: () => clock, maxPollMs: 5 });
    const waiting = await gate.acquire(appOf('t1'), 'vulnerabilities');
    // A minute on, the first call still waits for a slot: it will count when it goes out.
    clock = 61_000;
    const next = gate.acquire(appOf('t1'), 'vulnerabilities');
    expect(await stillWaiting(next)).toBe(true);
    clock = 61_500;
    waiting.sent();
    clock = 121_000;
    expect(await stillWaiting(next)).toBe(true);
    clock = 121_501;
    await next;
  });

  it('a call never sent should free its place two windows after it was taken', async () => {
    let clock = 0;
    const gate = createLocalQuotaGate({ limits: oneAMinute, now: () => clock, maxPollMs: 5 });
    await gate.acquire(appOf('t1'), 'vulnerabilities'); // its process stops before the call goes out
    clock = 119_000;
    const next = gate.acquire(appOf('t1'), 'vulnerabilities');
    expect(await stillWaiting(next)).toBe(true);
    clock = 120_001;
    await next;
  });
});

describe('quotaGateFor', () => {
  it('quotaGateFor should never wait when quotas are off', async () => {
    const gate = quotaGateFor('off', {} as never, 'p:');
    expect(gate).toBe(UNLIMITED_QUOTA_GATE);
    // Far more than Microsoft's 50 per-device calls a minute: none of them waits.
    for (let i = 0; i < 1_000; i++) (await atOnce(gate.acquire(appOf('tenant'), 'vulnerabilities'))).sent();
    await gate.block(appOf('tenant'), 'vulnerabilities', 60_000);
    await atOnce(gate.acquire(appOf('tenant'), 'vulnerabilities'));
  });

  it('quotaGateFor should keep the Redis quota gate for Microsoft quotas', async () => {
    const calls: unknown[][] = [];
    // The Redis gate runs its sliding-window script; a fake client answering "0 ms to wait" shows it is used.
    const redis = { eval: async (...args: unknown[]) => (calls.push(args), 0) };
    const gate = quotaGateFor('microsoft', redis as never, 'p:');
    expect(gate).not.toBe(UNLIMITED_QUOTA_GATE);
    await gate.acquire(appOf('tenant'), 'vulnerabilities');
    expect(calls).toHaveLength(1);
    expect(calls[0]).toContain('p:defender:quota:tenant:app:vulnerabilities:60000');
  });
});

describe('createRedisQuotaGate claims', () => {
  it('sent should move the member acquire took in both windows, and shrug off a failing Redis', async () => {
    const calls: unknown[][] = [];
    const redis = {
      eval: async (...args: unknown[]) => {
        calls.push(args);
        if (calls.length > 1) throw new Error('connection lost');
        return 0;
      },
    };
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const gate = createRedisQuotaGate(redis as never, 'p:');
      // Keyed by the tenant's id in lower case, however it was registered.
      const claim = await gate.acquire(appOf('Tenant'), 'bulk');
      const member = (calls[0] as unknown[])[5];
      expect(() => claim.sent()).not.toThrow();
      await new Promise((resolve) => setImmediate(resolve));
      // KEYS: both windows of the endpoint; ARGV: the member acquire added, then each window's length.
      expect(calls[1]?.slice(1)).toEqual([
        2,
        'p:defender:quota:tenant:app:bulk:60000',
        'p:defender:quota:tenant:app:bulk:3600000',
        member,
        '60000',
        '3600000',
      ]);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});

describe('createLocalQuotaGate waiters', () => {
  it('acquire should serve waiters in order and let an aborted waiter leave at once', async () => {
    let clock = 0;
    const gate = createLocalQuotaGate({
      limits: { ...MICROSOFT_QUOTAS, machines: [{ limit: 1, windowMs: 150 }] },
      now: () => clock,
      maxPollMs: 5,
    });
    (await gate.acquire(appOf('t1'), 'machines')).sent();
    const order: number[] = [];
    const controller = new AbortController();
    const sent = (turn: number) => (claim: QuotaClaim) => {
      claim.sent();
      order.push(turn);
    };
    // Stops the waiters a failed test leaves polling a clock that no longer moves.
    const ending = new AbortController();
    const first = gate.acquire(appOf('t1'), 'machines', ending.signal).then(sent(1));
    const aborted = gate.acquire(appOf('t1'), 'machines', controller.signal);
    const second = gate.acquire(appOf('t1'), 'machines', ending.signal).then(sent(2));
    try {
      controller.abort();
      await expect(atOnce(aborted)).rejects.toMatchObject({ code: 'DEFENDER_THROTTLED' });
      // The window frees once, for the first waiter; the next place is the second's.
      clock = 150;
      await Promise.race([first, second]);
      expect(order).toEqual([1]);
      clock = 300;
      await Promise.all([first, second]);
      expect(order).toEqual([1, 2]);
    } finally {
      ending.abort();
      await Promise.allSettled([first, aborted, second]);
    }
  });
});

describe('createLocalQuotaGate waiters stopped as they take their place', () => {
  it('acquire should give back the place taken after its caller stopped it', async () => {
    const gate = createLocalQuotaGate({
      limits: { ...MICROSOFT_QUOTAS, machines: [{ limit: 1, windowMs: 60_000 }] },
    });
    const controller = new AbortController();
    const acquiring = gate.acquire(appOf('t1'), 'machines', controller.signal);
    // Stopped after the window gave the call its place, before the caller has it.
    queueMicrotask(() => controller.abort());
    await expect(acquiring).rejects.toMatchObject({ code: 'DEFENDER_THROTTLED' });
    await new Promise((resolve) => setImmediate(resolve));
    // A wait of 0 ms allowed: it fails unless the place was given back.
    (await atOnce(gate.acquire(appOf('t1'), 'machines', undefined, 0))).sent();
  });
});

describe('planVulnerabilityMode', () => {
  it('planVulnerabilityMode should take per-device calls while they fit the quota with headroom', () => {
    // 10 min: min(50 × 10, 1,500 × 10/60) = 250, × 0.8 = 200.
    expect(planVulnerabilityMode(200, 10)).toEqual({ mode: 'per-device', perDeviceCapacity: 200 });
    expect(planVulnerabilityMode(201, 10)).toEqual({ mode: 'bulk', perDeviceCapacity: 200 });
  });

  it('planVulnerabilityMode should be bound by the hourly quota for long intervals', () => {
    // 1,440 min: min(72,000, 36,000) × 0.8.
    expect(planVulnerabilityMode(20_000, 1_440).perDeviceCapacity).toBe(28_800);
    expect(planVulnerabilityMode(30_000, 1_440).mode).toBe('bulk');
  });

  it('planVulnerabilityMode should accept another quota and headroom', () => {
    expect(planVulnerabilityMode(100, 1, { quota: [{ limit: 100, windowMs: 60_000 }], headroom: 1 })).toEqual(
      {
        mode: 'per-device',
        perDeviceCapacity: 100,
      },
    );
  });

  it('planVulnerabilityMode should plan each tenant sharing an app with its share of the quota', () => {
    // acme and acme-eu on one Entra app, hourly: min(3,000, 1,500) × 0.8 = 1,200 alone, 600 each.
    expect(planVulnerabilityMode(1_000, 60)).toEqual({ mode: 'per-device', perDeviceCapacity: 1_200 });
    expect(planVulnerabilityMode(1_000, 60, { sharers: 2 })).toEqual({
      mode: 'bulk',
      perDeviceCapacity: 600,
    });
    expect(planVulnerabilityMode(600, 60, { sharers: 2 }).mode).toBe('per-device');
    expect(planVulnerabilityMode(1_000, 60, { sharers: 0 }).perDeviceCapacity).toBe(1_200);
  });
});

describe('createLocalQuotaGate releases', () => {
  it('release should give back at once the place of a call never sent', async () => {
    const oneAMinute = { ...MICROSOFT_QUOTAS, vulnerabilities: [{ limit: 1, windowMs: 60_000 }] };
    const gate = createLocalQuotaGate({ limits: oneAMinute });
    const claim = await gate.acquire(appOf('t1'), 'vulnerabilities');
    claim.release();
    (await atOnce(gate.acquire(appOf('t1'), 'vulnerabilities', undefined, 0))).sent();
    await expect(gate.acquire(appOf('t1'), 'vulnerabilities', undefined, 0)).rejects.toMatchObject({
      code: 'DEFENDER_THROTTLED',
    });
  });
});
