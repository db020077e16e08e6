import { waitFor } from '@urs/testkit';
import { Registry } from '@urs/telemetry';
import { CallHealth, type CallLimiter, DegradedCalls, type QuotaClaim } from '../src';
import { createCallSlots } from '../src/call-slots';
import { gate, sharedLimitersPerTest } from './support';

// The calls of degraded tenants (their last call failed slowly: a Defender region that hangs) are capped
// together, so that the healthy tenants keep the other slots. The slots are shared by every process (the
// pollers, the vuln-fetchers, the registrars): so must the cap be.

const claim: QuotaClaim = { sent: () => undefined, release: () => undefined };

/**
 * Calls of degraded tenants that each hang until the test releases them (then fail at once, which leaves
 * their tenant degraded), counting how many are in flight at once. A call that starts with `cap` already in
 * flight (one over the cap) releases every call, so that calls without the cap end instead of holding the
 * test until its timeout.
 */
function hangingCalls(cap: number): {
  call: () => Promise<{ status: number }>;
  releaseOne: () => boolean;
  started: () => number;
  peak: () => number;
} {
  const waiting: (() => void)[] = [];
  let started = 0;
  let running = 0;
  let peak = 0;
  let over = false;
  return {
    call: async () => {
      started++;
      running++;
      peak = Math.max(peak, running);
      if (running > cap) {
        over = true;
        for (const release of waiting.splice(0)) release();
      }
      try {
        if (!over) {
          const hang = gate();
          waiting.push(hang.open);
          await hang.opened;
        }
        throw new Error('released');
      } finally {
        running--;
      }
    },
    releaseOne: () => {
      const release = waiting.shift();
      release?.();
      return release !== undefined;
    },
    started: () => started,
    peak: () => peak,
  };
}

const shared = sharedLimitersPerTest();

/** One process's shared limiter of 10 slots, and the places of its degraded tenants (its own, as in a process). */
async function processOf(
  registry?: Registry,
): Promise<{ limiter: CallLimiter; degradedCalls: DegradedCalls }> {
  const limiter = await shared.create({
    // The shared counts read often: the test waits for them.
    reconcileEveryMs: 100,
    ...(registry ? { metrics: registry } : {}),
  });
  return { limiter, degradedCalls: new DegradedCalls() };
}

/** Tenant `id`'s call slots in `process`, its tenant degraded when `degraded` (one slow failure behind it). */
function tenantOf(
  process: { limiter: CallLimiter; degradedCalls: DegradedCalls },
  id: string,
  degraded: boolean,
  more: { health?: CallHealth; maxDegradedWaitMs?: number } = {},
): ReturnType<typeof createCallSlots> {
  const health = more.health ?? new CallHealth(id, { degradedCalls: process.degradedCalls });
  if (degraded) {
    expect(health.start()).toBe(true);
    health.leave('failed', 'no answer within 30 s');
  }
  return createCallSlots({
    azureTenantId: id,
    limiter: process.limiter,
    health,
    metrics: undefined,
    requestTimeoutMs: 30_000,
    maxDegradedWaitMs: more.maxDegradedWaitMs,
  });
}

/** Two calls of degraded tenants of `process` that hang, holding both places, until `release`. */
async function bothPlacesTaken(
  process: { limiter: CallLimiter; degradedCalls: DegradedCalls },
  registry: Registry,
): Promise<{ release: () => Promise<void> }> {
  const calls = hangingCalls(2);
  const held = ['x', 'y'].map((id) =>
    tenantOf(process, `tenant-${id}`, true)
      .inSlot('machines', claim, 0, undefined, calls.call)
      .catch((error: unknown) => error),
  );
  await waitFor(() => calls.started() === 2, { description: 'both places taken' });
  await waitFor(() => registry.expose().includes('urs_defender_degraded_slots_running 2'), {
    description: 'both places counted in Redis',
  });
  return {
    release: async () => {
      while (calls.releaseOne());
      await Promise.all(held);
    },
  };
}

describe('the cap on the calls of degraded tenants, across processes', () => {
  it('two processes whose degraded tenants call at once hold at most 2 of the shared slots between them; a healthy call still goes', async () => {
    const registry = new Registry();
    const processes = [await processOf(registry), await processOf()];
    const calls = hangingCalls(2);
    const inFlight: Promise<unknown>[] = [];
    for (const [index, process] of processes.entries())
      for (const id of ['a', 'b', 'c']) {
        const slots = tenantOf(process, `tenant-${id}${index}`, true);
        for (let n = 0; n < 2; n++)
          inFlight.push(slots.inSlot('machines', claim, 0, undefined, calls.call).catch((error) => error));
      }
    await waitFor(() => calls.started() >= 2, { description: 'two calls of degraded tenants in flight' });

    // A healthy tenant's call, in either process, has a slot while the degraded tenants' calls hang.
    for (const [index, process] of processes.entries()) {
      const healthy = tenantOf(process, `tenant-healthy${index}`, false);
      await expect(
        healthy.inSlot('machines', claim, 0, undefined, async () => ({ status: 200 })),
      ).resolves.toEqual({ status: 200 });
    }
    expect(calls.peak()).toBe(2);
    await waitFor(() => registry.expose().includes('urs_defender_degraded_slots_running 2'), {
      description: 'the install-wide count of degraded calls in flight',
    });

    // Each call released lets one more go, and never more than 2 at once.
    let released = 0;
    while (released < 12) {
      if (calls.releaseOne()) released++;
      else await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const errors = await Promise.all(inFlight);
    expect(errors.every((error) => error instanceof Error && error.message === 'released')).toBe(true);
    expect(calls.started()).toBe(12);
    expect(calls.peak()).toBe(2);
  });

  it('a call waiting for a place goes as a healthy call once its tenant answers again', async () => {
    const registry = new Registry();
    const [first, second] = [await processOf(registry), await processOf(registry)];
    const holders = await bothPlacesTaken(first as Awaited<ReturnType<typeof processOf>>, registry);
    try {
      // Tenant z of the second process has a call in flight, sent while it was healthy, when another fails slowly.
      const health = new CallHealth('tenant-z', { degradedCalls: second?.degradedCalls as DegradedCalls });
      expect(health.start()).toBe(true);
      const slots = tenantOf(second as Awaited<ReturnType<typeof processOf>>, 'tenant-z', true, { health });
      const waiting = slots.inSlot('machines', claim, 0, undefined, async () => ({ status: 200 }));
      await waitFor(() => registry.expose().includes('urs_defender_degraded_slots_waiting 1'), {
        description: "tenant z's call waiting for a place",
      });
      // The call in flight is answered: the tenant is healthy, and its waiting call needs no place.
      health.leave('answered');
      await expect(waiting).resolves.toEqual({ status: 200 });
      expect(registry.expose()).toContain('urs_defender_degraded_slots_waiting 0');
    } finally {
      await holders.release();
    }
  });

  it('a call that waits longer than maxDegradedWaitMs for a place fails THROTTLED, not sent', async () => {
    const registry = new Registry();
    const [first, second] = [await processOf(registry), await processOf(registry)];
    const holders = await bothPlacesTaken(first as Awaited<ReturnType<typeof processOf>>, registry);
    try {
      const slots = tenantOf(second as Awaited<ReturnType<typeof processOf>>, 'tenant-z', true, {
        maxDegradedWaitMs: 300,
      });
      let sent = false;
      const error = await slots
        .inSlot('machines', claim, 0, undefined, async () => {
          sent = true;
          return { status: 200 };
        })
        .catch((failure: unknown) => failure);
      expect(error).toMatchObject({
        code: 'DEFENDER_THROTTLED',
        canRetry: false,
        message: expect.stringMatching(
          /^A machines call to the Defender API of tenant tenant-z was not sent: it waited 300 ms in all, as long as it may, for one of the 2 places kept for the calls of tenants whose last call failed slowly \(this tenant's did\), all taken by their calls \(queued [^)]+ ago\)/,
        ),
      });
      expect(sent).toBe(false);
      expect(registry.expose()).toContain('urs_defender_degraded_slots_waiting 0');
    } finally {
      await holders.release();
    }
  });
});

describe('a degraded tenant’s bulk export page under both caps', () => {
  /** A limiter with one place under the bulk cap and one among the degraded tenants' calls. */
  const oneOfEach = (registry: Registry, jobExpirationMs?: number): Promise<CallLimiter> =>
    shared.create({
      bulkMaxSlots: 1,
      degradedMaxSlots: 1,
      metrics: registry,
      ...(jobExpirationMs === undefined ? {} : { jobExpirationMs }),
    });
  const running = async (cap: 'bulk' | 'degraded'): Promise<string | null> =>
    shared.redis.client.hget(`b_${shared.redis.prefix}defender-${cap}_settings`, 'running');

  it('waits for its degraded place holding no place under the bulk cap: a healthy tenant’s page goes at once', async () => {
    const registry = new Registry();
    const limiter = await oneOfEach(registry);
    // A degraded tenant's call (a hanging one) holds the only place among the degraded tenants' calls.
    const holder = gate();
    const holding = limiter.schedule(() => holder.opened.then(() => 'degraded call'), {
      degraded: new AbortController().signal,
    });
    await waitFor(async () => (await running('degraded')) === '1', {
      description: 'the degraded place held',
    });
    // Another degraded tenant's bulk export page waits for that place.
    const page = limiter.schedule(async () => 'degraded page', {
      wholeSlot: true,
      degraded: new AbortController().signal,
    });
    let healthy: Promise<string> | undefined;
    try {
      await waitFor(() => registry.expose().includes('urs_defender_degraded_slots_waiting 1'), {
        description: "the degraded tenant's page waiting for a degraded place",
      });
      // It holds no place under the bulk cap while it waits: a healthy tenant's page takes the only one and runs.
      expect(await running('bulk')).toBe('0');
      let healthyRan = false;
      healthy = limiter.schedule(
        async () => {
          healthyRan = true;
          return 'healthy page';
        },
        { wholeSlot: true },
      );
      await waitFor(() => healthyRan, {
        description: "the healthy tenant's page run while the degraded page waits for its place",
      });
      await expect(healthy).resolves.toBe('healthy page');
      expect(registry.expose()).toContain('urs_defender_degraded_slots_waiting 1');
    } finally {
      holder.open();
      await Promise.allSettled([holding, page, healthy]);
    }
    await expect(holding).resolves.toBe('degraded call');
    await expect(page).resolves.toBe('degraded page');
  });

  it('queued behind the bulk cap for longer than 3 slot lengths, keeps its degraded place and runs once the bulk place frees', async () => {
    const registry = new Registry();
    const slotMs = 400;
    const limiter = await oneOfEach(registry, slotMs);
    // Healthy tenants' pages hold the only place under the bulk cap one after another, each until its slot ends:
    // the degraded page queued behind the five waits about five slot lengths for its place under the bulk cap.
    let healthyEnded = 0;
    const healthy = Array.from({ length: 5 }, (_, n) =>
      limiter.schedule(
        (slotEnds) =>
          new Promise<string>((resolve) =>
            slotEnds.addEventListener(
              'abort',
              () => {
                healthyEnded++;
                resolve(`healthy page ${n}`);
              },
              { once: true },
            ),
          ),
        { wholeSlot: true },
      ),
    );
    await waitFor(() => registry.expose().includes('urs_defender_bulk_slots_waiting 4'), {
      description: "the healthy tenants' pages queued behind the bulk cap",
    });
    let placed = 0;
    let endedBeforeIt = -1;
    const page = limiter.schedule(
      async () => {
        endedBeforeIt = healthyEnded;
        return 'degraded page';
      },
      {
        wholeSlot: true,
        degraded: new AbortController().signal,
        degradedPlaced: () => {
          placed++;
        },
      },
    );
    await expect(page).resolves.toBe('degraded page');
    // It ran after the five pages, each of which held the bulk place for most of a slot length...
    expect(endedBeforeIt).toBe(5);
    // ...and took its degraded place once: it never gave it back to queue again.
    expect(placed).toBe(1);
    await expect(Promise.all(healthy)).resolves.toHaveLength(5);
    await waitFor(async () => (await running('degraded')) === '0', {
      description: 'the degraded place given back',
    });
  });

  it('the wait for the bulk cap does not count against maxDegradedWaitMs', async () => {
    const registry = new Registry();
    const limiter = await oneOfEach(registry);
    const process = { limiter, degradedCalls: new DegradedCalls() };
    // A healthy tenant's bulk export page holds the only place under the bulk cap until the test lets it end.
    const holder = gate();
    let held = false;
    const holding = limiter.schedule(
      () => {
        held = true;
        return holder.opened.then(() => 'healthy page');
      },
      { wholeSlot: true },
    );
    await waitFor(() => held, { description: 'the bulk place held' });
    const slots = tenantOf(process, 'tenant-z', true, { maxDegradedWaitMs: 300 });
    let settled = false;
    const page = slots
      .inSlot('bulk', claim, 0, undefined, async () => ({ status: 200 }), true)
      .finally(() => {
        settled = true;
      });
    try {
      await waitFor(() => registry.expose().includes('urs_defender_bulk_slots_waiting 1'), {
        description: "the degraded tenant's page waiting for the bulk cap, its degraded place held",
      });
      expect(await running('degraded')).toBe('1');
      // It waits for the bulk cap well past its time to wait for a degraded place, and still waits.
      await new Promise((resolve) => setTimeout(resolve, 900));
      expect(settled).toBe(false);
    } finally {
      holder.open();
      await Promise.allSettled([holding, page]);
    }
    await expect(holding).resolves.toBe('healthy page');
    await expect(page).resolves.toEqual({ status: 200 });
  });
});
