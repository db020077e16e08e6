import { withSlotHandOff } from '../src/handoff';
import { createLocalLimiter, type CallLimiter } from '../src/limiter';
import { holdOnlySlot } from './support';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A local limiter that counts the slots it hands out. */
function countingLimiter(maxConcurrent: number): CallLimiter & { slots: () => number } {
  const inner = createLocalLimiter({ maxConcurrent });
  let slots = 0;
  return {
    schedule(task) {
      return inner.schedule((slotEnds) => {
        slots++;
        return task(slotEnds);
      });
    },
    close: () => inner.close(),
    slots: () => slots,
  };
}

/** `workers` callers each running `calls` calls of `ms`, like the vuln-fetcher's per-device workers. */
async function drive(
  limiter: CallLimiter,
  workers: number,
  calls: number,
  ms: number,
  inFlight: { now: number; peak: number },
) {
  let next = 0;
  const results: number[] = [];
  await Promise.all(
    Array.from({ length: workers }, async () => {
      for (let index = next++; index < calls; index = next++) {
        results[index] = await limiter.schedule(async () => {
          inFlight.now++;
          inFlight.peak = Math.max(inFlight.peak, inFlight.now);
          await sleep(ms);
          inFlight.now--;
          return index;
        });
      }
    }),
  );
  return results;
}

describe('withSlotHandOff', () => {
  it('withSlotHandOff should never run more calls at once than the inner limit', async () => {
    const inner = countingLimiter(3);
    const limiter = withSlotHandOff(inner);
    const inFlight = { now: 0, peak: 0 };
    const results = await drive(limiter, 8, 60, 2, inFlight);
    expect(results).toEqual(Array.from({ length: 60 }, (_, i) => i));
    expect(inFlight.peak).toBe(3);
    await limiter.close();
  });

  it('withSlotHandOff should pass a slot from call to call instead of asking the inner limiter each time', async () => {
    const inner = countingLimiter(3);
    const limiter = withSlotHandOff(inner);
    await drive(limiter, 6, 90, 1, { now: 0, peak: 0 });
    // Without hand-off every call takes a slot of its own (90); with it, a few slots serve them all.
    expect(inner.slots()).toBeLessThan(20);
    await limiter.close();
  });

  it('withSlotHandOff should give a slot back after maxCallsPerLease calls', async () => {
    const inner = countingLimiter(1);
    const limiter = withSlotHandOff(inner, { maxCallsPerLease: 5 });
    await drive(limiter, 2, 40, 0, { now: 0, peak: 0 });
    expect(inner.slots()).toBeGreaterThanOrEqual(8);
    await limiter.close();
  });

  it('withSlotHandOff should give a slot back after maxLeaseMs so other holders get a turn', async () => {
    const inner = countingLimiter(1);
    const limiter = withSlotHandOff(inner, { maxLeaseMs: 20 });
    // Another user of the same inner limiter (another process, in production) asks for the slot meanwhile.
    const busy = drive(limiter, 2, 300, 2, { now: 0, peak: 0 });
    await sleep(10);
    let otherRanAt = 0;
    const started = Date.now();
    await inner.schedule(async () => {
      otherRanAt = Date.now();
    });
    expect(otherRanAt - started).toBeLessThan(500);
    await busy;
    await limiter.close();
  });

  it('withSlotHandOff should keep a slot past its lease while the inner limiter says it may', async () => {
    const inner = countingLimiter(1);
    const asked: number[] = [];
    const limiter = withSlotHandOff(
      {
        ...inner,
        mayKeep: async (held) => {
          asked.push(held);
          return true;
        },
      },
      { maxLeaseMs: 5 },
    );
    await drive(limiter, 2, 40, 2, { now: 0, peak: 0 });
    expect(inner.slots()).toBe(1);
    expect(asked.length).toBeGreaterThan(0);
    expect(new Set(asked)).toEqual(new Set([1]));
    await limiter.close();
  });

  it('withSlotHandOff should give a slot back at the end of its lease when the inner limiter says no', async () => {
    const inner = countingLimiter(1);
    const limiter = withSlotHandOff({ ...inner, mayKeep: async () => false }, { maxLeaseMs: 5 });
    await drive(limiter, 2, 40, 2, { now: 0, peak: 0 });
    expect(inner.slots()).toBeGreaterThanOrEqual(8);
    await limiter.close();
  });

  it('withSlotHandOff should give a slot back when the inner limiter cannot tell', async () => {
    const inner = countingLimiter(1);
    const limiter = withSlotHandOff(
      { ...inner, mayKeep: () => Promise.reject(new Error('Redis unavailable')) },
      { maxLeaseMs: 5 },
    );
    const results = await drive(limiter, 2, 40, 2, { now: 0, peak: 0 });
    expect(results).toHaveLength(40);
    expect(inner.slots()).toBeGreaterThanOrEqual(8);
    await limiter.close();
  });

  it('withSlotHandOff should give a kept slot back after maxHoldMs in all', async () => {
    const inner = countingLimiter(1);
    const limiter = withSlotHandOff(
      { ...inner, mayKeep: async () => true },
      { maxLeaseMs: 5, maxHoldMs: 20 },
    );
    // 40 calls of ≥ 2 ms one after another: ≥ 80 ms, so a slot held at most 20 ms is asked for ≥ 4 times.
    await drive(limiter, 2, 40, 2, { now: 0, peak: 0 });
    expect(inner.slots()).toBeGreaterThanOrEqual(4);
    await limiter.close();
  });

  it("withSlotHandOff should start the next waiting call's request before the finished call's caller goes on", async () => {
    const limiter = withSlotHandOff(createLocalLimiter({ maxConcurrent: 1 }));
    const events: string[] = [];
    // Node writes a request to its socket on a later tick, which waits for every pending promise continuation.
    const request = (name: string) => async () => {
      process.nextTick(() => events.push(`${name} written`));
      await sleep(5);
      return name;
    };
    const first = limiter.schedule(request('first')).then(() => events.push('first caller went on'));
    const second = limiter.schedule(request('second'));
    await Promise.all([first, second]);
    expect(events).toEqual(['first written', 'second written', 'first caller went on']);
    await limiter.close();
  });

  it('withSlotHandOff should fail only the call whose task failed', async () => {
    const limiter = withSlotHandOff(createLocalLimiter({ maxConcurrent: 2 }));
    const outcomes = await Promise.allSettled(
      [1, 2, 3, 4].map((n) =>
        limiter.schedule(async () => {
          if (n === 2) throw new Error('boom');
          return n;
        }),
      ),
    );
    expect(outcomes.map((outcome) => outcome.status)).toEqual([
      'fulfilled',
      'rejected',
      'fulfilled',
      'fulfilled',
    ]);
    expect((outcomes[1] as PromiseRejectedResult).reason).toEqual(new Error('boom'));
    await limiter.close();
  });

  it('withSlotHandOff should fail a waiting call when its slot cannot be had', async () => {
    const failing: CallLimiter = {
      schedule: () => Promise.reject(new Error('limiter unavailable')),
      close: async () => undefined,
    };
    const limiter = withSlotHandOff(failing);
    await expect(limiter.schedule(async () => 1)).rejects.toThrow('limiter unavailable');
  });
});

describe('withSlotHandOff and a waiting call whose signal aborts', () => {
  it('withSlotHandOff should reject a waiting call when its signal aborts and never run it', async () => {
    const limiter = withSlotHandOff(createLocalLimiter({ maxConcurrent: 1 }));
    const { free, busy } = await holdOnlySlot(limiter);
    const ran: string[] = [];
    const stop = new AbortController();
    const stopped = limiter.schedule(async () => void ran.push('stopped'), { signal: stop.signal });
    const next = limiter.schedule(async () => void ran.push('next'));
    const reason = new Error('the service stops');
    stop.abort(reason);
    await expect(stopped).rejects.toBe(reason);
    free();
    await Promise.all([busy, next]);
    expect(ran).toEqual(['next']);
    await limiter.close();
  });

  it('withSlotHandOff should reject at once a call whose signal already aborted', async () => {
    const limiter = withSlotHandOff(createLocalLimiter({ maxConcurrent: 1 }));
    const reason = new Error('the service stops');
    let ran = false;
    await expect(
      limiter.schedule(async () => (ran = true), { signal: AbortSignal.abort(reason) }),
    ).rejects.toBe(reason);
    expect(ran).toBe(false);
    await limiter.close();
  });
});
