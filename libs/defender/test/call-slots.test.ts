import { AxiosError } from 'axios';
import {
  CallHealth,
  DegradedCalls,
  type CallLimiter,
  type CallOutcome,
  createLocalLimiter,
  createLocalQuotaGate,
  type DefenderEndpointClass,
  MICROSOFT_QUOTAS,
  type QuotaClaim,
  type QuotaGate,
  withSlotHandOff,
} from '../src';
import { withBulkCap } from '../src/bulk-cap';
import { createCallSlots } from '../src/call-slots';
import { appOf, holdOnlySlot } from './support';

const claim: QuotaClaim = { sent: () => undefined, release: () => undefined };

/** Tenant a's call slots over `limiter` (one whose slots are handed from call to call). */
function handedOffSlots(limiter: ReturnType<typeof withSlotHandOff>) {
  return createCallSlots({
    azureTenantId: 'tenant-a',
    limiter,
    health: new CallHealth('tenant-a'),
    metrics: undefined,
    requestTimeoutMs: 1_000,
  });
}

/** MDE's own 404, with its error body. */
const MDE_NOT_FOUND = JSON.stringify({
  error: { code: 'ResourceNotFound', message: 'No machines were found for the tenant.' },
});

/**
 * The outcome `createCallSlots` gives CallHealth for a call of `endpoint` answered `status` after `afterMs`,
 * with `body` when given.
 */
async function outcomeOf(
  endpoint: DefenderEndpointClass,
  status: number,
  afterMs: number,
  options: { requestTimeoutMs?: number; slowCallMs?: number; body?: string } = {},
): Promise<CallOutcome> {
  const health = new CallHealth('tenant-a');
  const leave = jest.spyOn(health, 'leave');
  const limiter = createLocalLimiter();
  const slots = createCallSlots({
    azureTenantId: 'tenant-a',
    limiter,
    health,
    metrics: undefined,
    requestTimeoutMs: options.requestTimeoutMs ?? 1_000,
    slowCallMs: options.slowCallMs,
  });
  try {
    await slots.inSlot(endpoint, claim, 0, undefined, async () => {
      await new Promise((resolve) => setTimeout(resolve, afterMs));
      return options.body === undefined ? { status } : { status, data: options.body };
    });
    expect(leave).toHaveBeenCalledTimes(1);
    return leave.mock.calls[0]?.[0] as CallOutcome;
  } finally {
    await limiter.close();
  }
}

describe('createCallSlots', () => {
  it('inSlot should tell the tenant’s health of a call answered after slowCallMs as answered slowly', async () => {
    expect(await outcomeOf('vulnerabilities', 200, 120, { slowCallMs: 100 })).toBe('answeredSlowly');
    expect(await outcomeOf('machines', 404, 120, { slowCallMs: 100, body: MDE_NOT_FOUND })).toBe(
      'answeredSlowly',
    );
    expect(await outcomeOf('vulnerabilities', 200, 0, { slowCallMs: 100 })).toBe('answered');
  });

  it('inSlot should count a 5xx after slowCallMs as a slow failure, one that comes at once as neither', async () => {
    expect(await outcomeOf('vulnerabilities', 503, 120, { slowCallMs: 100 })).toBe('failed');
    expect(await outcomeOf('vulnerabilities', 503, 0, { slowCallMs: 100 })).toBe('neither');
    expect(await outcomeOf('vulnerabilities', 429, 120, { slowCallMs: 100 })).toBe('neither');
  });

  it('inSlot should count a failure after 250 ms as a slow failure, far below slowCallMs, its answer not slow', async () => {
    const timeouts = { slowCallMs: 2_000, requestTimeoutMs: 10_000 };
    expect(await outcomeOf('vulnerabilities', 503, 300, timeouts)).toBe('failed');
    expect(await outcomeOf('vulnerabilities', 200, 300, timeouts)).toBe('answered');
    expect(await outcomeOf('vulnerabilities', 503, 0, timeouts)).toBe('neither');
  });

  it('inSlot should have a degraded tenant’s bulk export page wait for its place among the degraded tenants’ before the bulk cap and a slot', async () => {
    const degradedCalls = new DegradedCalls(1);
    const a = new CallHealth('tenant-a', { degradedCalls });
    const b = new CallHealth('tenant-b', { degradedCalls });
    for (const health of [a, b]) {
      health.start();
      health.leave('failed', 'no answer within 30 s');
    }
    // b's call in flight takes the only place.
    expect(b.start()).toBe(true);
    const asked = { slots: 0, cap: 0 };
    const counted = (limiter: CallLimiter, kind: 'slots' | 'cap'): CallLimiter => ({
      schedule: (task, options) => {
        asked[kind]++;
        return limiter.schedule(task, options);
      },
      close: () => limiter.close(),
    });
    const inner = createLocalLimiter({ maxConcurrent: 2 });
    const cap = createLocalLimiter({ maxConcurrent: 1 });
    const limiter = withBulkCap(counted(inner, 'slots'), counted(cap, 'cap'), {
      placeMs: 600_000,
      slotMs: 60_000,
    });
    try {
      const slots = createCallSlots({
        azureTenantId: 'tenant-a',
        limiter,
        health: a,
        metrics: undefined,
        requestTimeoutMs: 1_000,
      });
      const page = slots.inSlot('bulk', claim, 0, undefined, async () => ({ status: 200 }), true);
      await new Promise((resolve) => setTimeout(resolve, 50));
      // Waiting for its place, it holds neither the cap's nor a slot.
      expect(asked).toEqual({ slots: 0, cap: 0 });
      b.leave('failed', 'no answer within 30 s');
      await expect(page).resolves.toEqual({ status: 200 });
      expect(asked).toEqual({ slots: 1, cap: 1 });
    } finally {
      await cap.close();
      await limiter.close();
    }
  });

  it('inSlot should have a freed place among the degraded tenants’ take one shared slot, not one for each call that looks for it', async () => {
    const degradedCalls = new DegradedCalls(1);
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((id) => new CallHealth(id, { degradedCalls })) as [
      CallHealth,
      CallHealth,
      CallHealth,
      CallHealth,
    ];
    // a's calls go one at a time (3 slow failures in a row); b, c and d are degraded too.
    for (const [health, failures] of [
      [a, 3],
      [b, 1],
      [c, 1],
      [d, 1],
    ] as const)
      for (let i = 0; i < failures; i++) {
        health.start();
        health.leave('failed', 'no answer within 30 s');
      }
    // a's call in flight holds the only place.
    expect(a.start()).toBe(true);
    let slotsTaken = 0;
    const inner = createLocalLimiter();
    const limiter: CallLimiter = {
      schedule: (task, options) => {
        slotsTaken++;
        return inner.schedule(task, options);
      },
      close: () => inner.close(),
    };
    let answer: () => void = () => undefined;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    try {
      // a's next call waits for a's own place, b's, c's and d's for the place among the degraded tenants'.
      const calls = [a, b, c, d].map((health) =>
        createCallSlots({
          azureTenantId: 'tenant',
          limiter,
          health,
          metrics: undefined,
          requestTimeoutMs: 1_000,
        }).inSlot('vulnerabilities', claim, 0, undefined, async () => {
          await answered;
          return { status: 200 };
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(slotsTaken).toBe(0);
      // a's call ends: a's own place and the place among the degraded tenants' free together.
      a.leave('failed', 'no answer within 30 s');
      await new Promise((resolve) => setTimeout(resolve, 50));
      // One call took a slot for the freed place, and kept it: b's, the longest waiting for the place, not a's too.
      expect(slotsTaken).toBe(1);
      // The answers free the place for the next call, one call and one slot at a time.
      answer();
      await Promise.all(calls);
      expect(slotsTaken).toBe(4);
    } finally {
      answer();
      await limiter.close();
    }
  });

  it('inSlot should count a 404 or 403 without Microsoft’s error body as a front end’s failure, not as the API’s answer', async () => {
    const page = '<html><head><title>404 Not Found</title></head><body>Application Gateway</body></html>';
    expect(await outcomeOf('machines', 404, 120, { slowCallMs: 100, body: page })).toBe('failed');
    expect(await outcomeOf('machines', 404, 0, { slowCallMs: 100, body: '' })).toBe('neither');
    expect(await outcomeOf('vulnerabilities', 403, 120, { slowCallMs: 100, body: '' })).toBe('failed');
    // Microsoft's own answers, its error body with them.
    expect(await outcomeOf('machines', 404, 0, { slowCallMs: 100, body: MDE_NOT_FOUND })).toBe('answered');
    const forbidden = JSON.stringify({ error: { code: 'Forbidden', message: 'Missing application roles.' } });
    expect(await outcomeOf('vulnerabilities', 403, 0, { slowCallMs: 100, body: forbidden })).toBe('answered');
  });

  it('slowCallMs should default to a quarter of the request timeout, at most 2 s', async () => {
    // A quarter of 1.2 s: 300 ms. The fast call is 200 ms below it, so that a loaded machine's late timer does
    // not make it slow (a 60 ms call was held past 100 ms).
    expect(await outcomeOf('vulnerabilities', 200, 350, { requestTimeoutMs: 1_200 })).toBe('answeredSlowly');
    expect(await outcomeOf('vulnerabilities', 504, 350, { requestTimeoutMs: 1_200 })).toBe('failed');
    expect(await outcomeOf('vulnerabilities', 200, 100, { requestTimeoutMs: 1_200 })).toBe('answered');
    // At most 2 s, whatever the timeout.
    expect(await outcomeOf('vulnerabilities', 200, 2_050, { requestTimeoutMs: 30_000 })).toBe(
      'answeredSlowly',
    );
  });

  it('inSlot should never count a long bulk export page answered as slow, and its failure only after half the request timeout', async () => {
    expect(await outcomeOf('bulk', 200, 120, { slowCallMs: 100 })).toBe('answered');
    expect(await outcomeOf('bulk', 503, 120, { slowCallMs: 100, requestTimeoutMs: 1_000 })).toBe('neither');
    expect(await outcomeOf('bulk', 503, 120, { slowCallMs: 100, requestTimeoutMs: 200 })).toBe('failed');
  });

  it('inSlot should tell the tenant’s health of a failed call before its slot serves the next call', async () => {
    // 20 calls of one tenant over 10 handed-off slots; the first 10 time out together. Told of each failure
    // only after the slot has sent the next call, the tenant's health would let all 20 go; told at once, it
    // stops them once its calls are held back.
    const health = new CallHealth('tenant-a', { holdBackAfter: 10 });
    const limiter = withSlotHandOff(createLocalLimiter({ maxConcurrent: 10 }));
    const slots = createCallSlots({
      azureTenantId: 'tenant-a',
      limiter,
      health,
      metrics: undefined,
      requestTimeoutMs: 1_000,
      slowCallMs: 10,
    });
    let timeOut: (error: Error) => void = () => undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timeOut = reject;
    });
    timedOut.catch(() => undefined);
    let sent = 0;
    try {
      const calls = Array.from({ length: 20 }, () =>
        slots.inSlot('vulnerabilities', claim, 0, undefined, async () => {
          sent++;
          return timedOut;
        }),
      );
      while (sent < 10) await new Promise((resolve) => setTimeout(resolve, 5));
      // Every call in flight has held its slot past slowCallMs: each failure counts.
      await new Promise((resolve) => setTimeout(resolve, 30));
      expect(sent).toBe(10);
      timeOut(new AxiosError('timeout of 1000ms exceeded', 'ECONNABORTED'));
      const results = await Promise.allSettled(calls);
      expect(results.every((result) => result.status === 'rejected')).toBe(true);
      expect(sent).toBe(10);
      const heldBack = results.filter((result) =>
        CallHealth.isHeldBack((result as PromiseRejectedResult).reason),
      );
      expect(heldBack).toHaveLength(10);
    } finally {
      await limiter.close();
    }
  });

  it('inSlot should give a call with no deadline of its own (wholeSlot) a slot of its own, not the rest of one a call before it held', async () => {
    const limiter = withSlotHandOff(createLocalLimiter({ maxConcurrent: 1 }));
    const slots = handedOffSlots(limiter);
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const slotsOf: AbortSignal[] = [];
    try {
      const first = slots.inSlot('vulnerabilities', claim, 0, undefined, async (abortOn) => {
        slotsOf.push(abortOn);
        await released;
        return { status: 200 };
      });
      const page = slots.inSlot(
        'bulk',
        claim,
        0,
        undefined,
        async (abortOn) => {
          slotsOf.push(abortOn);
          return { status: 200 };
        },
        true,
      );
      // The page waits behind the call holding the only slot, which would hand it the rest of its slot.
      await new Promise((resolve) => setImmediate(resolve));
      release();
      await expect(Promise.all([first, page])).resolves.toEqual([{ status: 200 }, { status: 200 }]);
      expect(slotsOf).toHaveLength(2);
      expect(slotsOf[1]).not.toBe(slotsOf[0]);
    } finally {
      await limiter.close();
    }
  });

  it('inSlot should say how long a call stopped at its slot’s end ran itself, not only how long the slot was held', async () => {
    // Slots end 900 ms after they start; the second call is handed the slot after the first's 300 ms.
    const limiter = withSlotHandOff(createLocalLimiter({ maxConcurrent: 1, jobExpirationMs: 1_000 }));
    const slots = handedOffSlots(limiter);
    try {
      const first = slots.inSlot('vulnerabilities', claim, 0, undefined, async () => {
        await new Promise((resolve) => setTimeout(resolve, 300));
        return { status: 200 };
      });
      const trickling = slots.inSlot(
        'vulnerabilities',
        claim,
        0,
        undefined,
        (abortOn) =>
          new Promise<never>((_, reject) =>
            abortOn.addEventListener('abort', () => reject(abortOn.reason as Error), { once: true }),
          ),
      );
      await expect(first).resolves.toEqual({ status: 200 });
      const error = await trickling.then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      const said = /ran (\d+) ms and was stopped when its call slot ended \(held 900 ms, /.exec(
        error?.message ?? '',
      );
      expect({ message: error?.message, ran: said?.[1] }).toEqual({
        message: expect.stringContaining(
          'was stopped when its call slot ended (held 900 ms, as long as the limiter allows)',
        ),
        ran: expect.any(String),
      });
      // The call itself ran only what the first call left of the slot.
      expect(Number(said?.[1])).toBeLessThan(900);
    } finally {
      await limiter.close();
    }
  });
});

describe('createCallSlots and the quota of calls never sent', () => {
  const oneAMinute = { ...MICROSOFT_QUOTAS, vulnerabilities: [{ limit: 1, windowMs: 60_000 }] };

  /** Whether the tenant's quota of one call a minute has room at once (a wait of 0 ms allowed). */
  async function hasRoom(gate: QuotaGate): Promise<boolean> {
    try {
      (await gate.acquire(appOf('tenant-a'), 'vulnerabilities', undefined, 0)).sent();
      return true;
    } catch {
      return false;
    }
  }

  function slotsOver(limiter: CallLimiter, health = new CallHealth('tenant-a')) {
    return createCallSlots({
      azureTenantId: 'tenant-a',
      limiter,
      health,
      metrics: undefined,
      requestTimeoutMs: 1_000,
    });
  }

  it('inSlot should give its claim back when its caller stops it while it waits for a slot', async () => {
    const gate = createLocalQuotaGate({ limits: oneAMinute });
    const limiter = createLocalLimiter({ maxConcurrent: 1 });
    const slots = slotsOver(limiter);
    // Another call holds the only slot.
    const { free, busy } = await holdOnlySlot(limiter);
    try {
      const stop = new AbortController();
      const claim = await gate.acquire(appOf('tenant-a'), 'vulnerabilities');
      const call = slots.inSlot('vulnerabilities', claim, 0, stop.signal, async () => ({ status: 200 }));
      call.catch(() => undefined);
      stop.abort();
      free();
      await expect(call).rejects.toMatchObject({ code: 'DEFENDER_UNAVAILABLE' });
      expect(await hasRoom(gate)).toBe(true);
    } finally {
      free();
      await busy;
      await limiter.close();
    }
  });

  it('inSlot should give its claim back when the tenant’s calls are held back', async () => {
    const gate = createLocalQuotaGate({ limits: oneAMinute });
    const health = new CallHealth('tenant-a', { oneAtATimeAfter: 1, holdBackAfter: 1 });
    health.start();
    health.leave('failed', 'ECONNRESET');
    const limiter = createLocalLimiter();
    try {
      const claim = await gate.acquire(appOf('tenant-a'), 'vulnerabilities');
      const call = slotsOver(limiter, health).inSlot('vulnerabilities', claim, 0, undefined, async () => ({
        status: 200,
      }));
      expect(CallHealth.isHeldBack(await call.catch((error: unknown) => error))).toBe(true);
      expect(await hasRoom(gate)).toBe(true);
    } finally {
      await limiter.close();
    }
  });

  it('inSlot should give its claim back when the limiter fails to give it a slot', async () => {
    const gate = createLocalQuotaGate({ limits: oneAMinute });
    const failing: CallLimiter = {
      schedule: () => Promise.reject(new Error('Connection is closed.')),
      close: async () => undefined,
    };
    const claim = await gate.acquire(appOf('tenant-a'), 'vulnerabilities');
    const call = slotsOver(failing).inSlot('vulnerabilities', claim, 0, undefined, async () => ({
      status: 200,
    }));
    await expect(call).rejects.toThrow('Connection is closed.');
    expect(await hasRoom(gate)).toBe(true);
  });

  it('inSlot should keep the claim of a call that was sent', async () => {
    const gate = createLocalQuotaGate({ limits: oneAMinute });
    const limiter = createLocalLimiter();
    try {
      const claim = await gate.acquire(appOf('tenant-a'), 'vulnerabilities');
      const call = slotsOver(limiter).inSlot('vulnerabilities', claim, 0, undefined, async () => {
        throw new AxiosError('socket hang up', 'ECONNRESET');
      });
      await expect(call).rejects.toThrow('socket hang up');
      expect(await hasRoom(gate)).toBe(false);
    } finally {
      await limiter.close();
    }
  });
});

describe('createCallSlots and a call stopped while every slot is busy', () => {
  it.each([
    ['a limiter of its own', () => createLocalLimiter({ maxConcurrent: 1 })],
    ['slots handed from call to call', () => withSlotHandOff(createLocalLimiter({ maxConcurrent: 1 }))],
  ])(
    'inSlot over %s should end a call stopped while it waits for a slot at once, not sent',
    async (_, makeLimiter) => {
      const limiter = makeLimiter();
      const slots = createCallSlots({
        azureTenantId: 'tenant-a',
        limiter,
        health: new CallHealth('tenant-a'),
        metrics: undefined,
        requestTimeoutMs: 1_000,
      });
      // Another process's call (a bulk export page) holds the only slot for up to a minute.
      const { free, busy } = await holdOnlySlot(limiter);
      let sent = false;
      try {
        const stop = new AbortController();
        const call = slots.inSlot('vulnerabilities', claim, 0, stop.signal, async () => {
          sent = true;
          return { status: 200 };
        });
        // Stopped once it waits for the slot (past its tenant's turn).
        await new Promise((resolve) => setImmediate(resolve));
        stop.abort(new Error('the service stops'));
        // Settles while the slot is still held.
        await expect(call).rejects.toMatchObject({
          code: 'DEFENDER_UNAVAILABLE',
          message: expect.stringMatching(/stopped before it was sent/),
        });
        free();
        await busy;
        expect(sent).toBe(false);
      } finally {
        free();
        await limiter.close();
      }
    },
  );
});

describe('createCallSlots and a call that runs out of its time before it is sent', () => {
  /** A call of `health`'s tenant over `limiter` with 50 ms to be sent; what it failed with. */
  async function timedOut(health: CallHealth, limiter: CallLimiter): Promise<unknown> {
    const slots = createCallSlots({
      azureTenantId: 'tenant-a',
      limiter,
      health,
      metrics: undefined,
      requestTimeoutMs: 1_000,
    });
    return slots
      .inSlot('machines', claim, 0, AbortSignal.timeout(50), async () => ({ status: 200 }))
      .then(
        () => undefined,
        (error: unknown) => error,
      );
  }

  /** A call of `health`'s tenant over `limiter` that fails DEFENDER_UNAVAILABLE, its message matching `reason`. */
  async function failsUnsentSaying(
    health: CallHealth,
    limiter: CallLimiter,
    reason: RegExp,
  ): Promise<unknown> {
    const error = await timedOut(health, limiter);
    expect(error).toMatchObject({ code: 'DEFENDER_UNAVAILABLE', message: expect.stringMatching(reason) });
    return error;
  }

  /** A call of tenant a, slow failures in a row behind it, its health sharing `degradedCalls`. */
  function degraded(degradedCalls: DegradedCalls, id = 'tenant-a'): CallHealth {
    const health = new CallHealth(id, { degradedCalls });
    expect(health.start()).toBe(true);
    health.leave('failed', 'no answer within 30 s');
    return health;
  }

  it('inSlot should say a call waited for a shared call slot when every slot was busy', async () => {
    const limiter = createLocalLimiter({ maxConcurrent: 1 });
    const { free, busy } = await holdOnlySlot(limiter);
    try {
      await failsUnsentSaying(
        new CallHealth('tenant-a'),
        limiter,
        /was not sent within the time allowed: it waited \d+ ms for one of the shared call slots, all busy with other calls$/,
      );
    } finally {
      free();
      await busy;
      await limiter.close();
    }
  });

  it('inSlot should say a degraded tenant’s call waited for one of the places of degraded tenants, not for a shared slot', async () => {
    const degradedCalls = new DegradedCalls(1);
    const a = degraded(degradedCalls);
    const b = degraded(degradedCalls, 'tenant-b');
    // b's call in flight takes the only place; the shared slots are free.
    expect(b.start()).toBe(true);
    const limiter = createLocalLimiter({ maxConcurrent: 10 });
    try {
      const error = await failsUnsentSaying(
        a,
        limiter,
        /was not sent within the time allowed: it waited \d+ ms for one of the 1 places kept for the calls of tenants whose last call failed slowly \(this tenant's did\), all taken by their calls$/,
      );
      expect((error as Error).message).not.toMatch(/shared call slots/);
    } finally {
      b.leave('failed', 'no answer within 30 s');
      await limiter.close();
    }
  });

  it('inSlot should say a call waited for its tenant’s own place when the tenant’s calls are limited', async () => {
    // Degraded, with places to spare among the degraded tenants': its calls go one at a time.
    const health = new CallHealth('tenant-a', {
      degradedCalls: new DegradedCalls(Infinity),
      oneAtATimeAfter: 1,
    });
    expect(health.start()).toBe(true);
    health.leave('failed', 'no answer within 30 s');
    expect(health.start()).toBe(true);
    const limiter = createLocalLimiter({ maxConcurrent: 10 });
    try {
      await failsUnsentSaying(
        health,
        limiter,
        /was not sent within the time allowed: it waited \d+ ms for its tenant's turn: slow calls or failures of the tenant's API have limited its calls in flight \(1 now\), all taken$/,
      );
    } finally {
      health.leave('answered');
      await limiter.close();
    }
  });
});

describe('maxDegradedWaitMs', () => {
  it('counts only the wait for a place among the degraded tenants, not the wait for a slot with the place held', async () => {
    const degradedCalls = new DegradedCalls();
    const health = new CallHealth('tenant-w', { degradedCalls });
    expect(health.start()).toBe(true);
    health.leave('failed', 'no answer within 30 s');
    const local = createLocalLimiter();
    const others = {};
    let asks = 0;
    // The install-wide place comes at once. The first time, the slot comes only after far longer than the call
    // may wait for a place, and by then other degraded calls of the process hold its places: the call gives the
    // slot back and waits in the process for a place, which frees a moment later.
    const limiter: CallLimiter = {
      ...local,
      schedule: async (task, options) => {
        options?.degradedPlaced?.();
        if (++asks > 1) return local.schedule(task, options);
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        degradedCalls.add(others, 2);
        try {
          return await local.schedule(task, options);
        } finally {
          setTimeout(() => degradedCalls.add(others, -2), 50);
        }
      },
    };
    const slots = createCallSlots({
      azureTenantId: 'tenant-w',
      limiter,
      health,
      metrics: undefined,
      requestTimeoutMs: 30_000,
      maxDegradedWaitMs: 200,
    });
    await expect(
      slots.inSlot(
        'machines',
        { sent: () => undefined, release: () => undefined },
        0,
        undefined,
        async () => ({
          status: 200,
        }),
      ),
    ).resolves.toEqual({ status: 200 });
    expect(asks).toBe(2);
    await local.close();
  });
});
