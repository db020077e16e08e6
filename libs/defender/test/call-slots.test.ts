import { AxiosError } from 'axios';
import {
  CallHealth,
  type CallOutcome,
  createLocalLimiter,
  type DefenderEndpointClass,
  type QuotaClaim,
  withSlotHandOff,
} from '../src';
import { createCallSlots } from '../src/call-slots';

const claim: QuotaClaim = { sent: () => undefined };

/** The outcome `createCallSlots` gives CallHealth for a call of `endpoint` answered `status` after `afterMs`. */
async function outcomeOf(
  endpoint: DefenderEndpointClass,
  status: number,
  afterMs: number,
  options: { requestTimeoutMs?: number; slowCallMs?: number } = {},
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
      return { status };
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
    expect(await outcomeOf('machines', 404, 120, { slowCallMs: 100 })).toBe('answeredSlowly');
    expect(await outcomeOf('vulnerabilities', 200, 0, { slowCallMs: 100 })).toBe('answered');
  });

  it('inSlot should count a 5xx after slowCallMs as a slow failure, one that comes at once as neither', async () => {
    expect(await outcomeOf('vulnerabilities', 503, 120, { slowCallMs: 100 })).toBe('failed');
    expect(await outcomeOf('vulnerabilities', 503, 0, { slowCallMs: 100 })).toBe('neither');
    expect(await outcomeOf('vulnerabilities', 429, 120, { slowCallMs: 100 })).toBe('neither');
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
});
