import { waitFor } from '@urs/testkit';
import { Registry } from '@urs/telemetry';
import { type CallLimiter, type SharedLimiterOptions } from '../src';
import { SlotEndedError } from '../src/limiter';
import { gate, sharedLimitersPerTest } from './support';

// A bulk export page (`wholeSlot`) holds its shared slot until the page ends, a minute at most: without a cap,
// a few large bulk tenants read at once hold every slot, and a per-device tenant's calls wait behind them.

/**
 * Whole-slot tasks that each hold their slot until the test opens their gate, counting how many run at once.
 * A task that starts with `cap` already running (one over the cap) opens every gate, so that a limiter
 * without the cap ends its tasks instead of holding the test until its timeout.
 */
function bulkProbe(cap: number): {
  task: (name: string) => () => Promise<string>;
  open: (name: string) => void;
  started: string[];
  peak: () => number;
} {
  const gates = new Map<string, ReturnType<typeof gate>>();
  const started: string[] = [];
  let running = 0;
  let peak = 0;
  /** One ran over the cap: every task, started or not, ends at once. */
  let over = false;
  const gateOf = (name: string): ReturnType<typeof gate> => {
    let named = gates.get(name);
    if (!named) gates.set(name, (named = gate()));
    return named;
  };
  return {
    task: (name) => async () => {
      started.push(name);
      running++;
      peak = Math.max(peak, running);
      if (running > cap) {
        over = true;
        for (const each of gates.values()) each.open();
      }
      try {
        if (!over) await gateOf(name).opened;
        return name;
      } finally {
        running--;
      }
    },
    open: (name) => gateOf(name).open(),
    started,
    peak: () => peak,
  };
}

const shared = sharedLimitersPerTest();

/** A shared limiter of `maxConcurrent` slots, at most `bulkMaxSlots` of them held by whole-slot calls. */
async function limiter(
  maxConcurrent: number,
  bulkMaxSlots: number,
  more: Partial<SharedLimiterOptions> = {},
): Promise<CallLimiter> {
  return shared.create({ maxConcurrent, bulkMaxSlots, ...more });
}

/** The shared count of whole-slot calls holding the cap, as Redis keeps it. */
async function bulkRunning(): Promise<string | null> {
  return shared.redis.client.hget(`b_${shared.redis.prefix}defender-bulk_settings`, 'running');
}

async function mainRunning(): Promise<string | null> {
  return shared.redis.client.hget(`b_${shared.redis.prefix}defender-api_settings`, 'running');
}

describe('createSharedLimiter with a cap on whole-slot (bulk export) calls', () => {
  it('a per-device call gets a slot while whole-slot calls beyond the cap wait, across processes; the next one goes when one ends', async () => {
    const registry = new Registry();
    // One process hands slots from call to call (as the vuln-fetcher does), the other asks Redis for each.
    const first = await limiter(4, 2, { handOff: { maxLeaseMs: 1_000 }, metrics: registry });
    const second = await limiter(4, 2);
    const probe = bulkProbe(2);
    const bulk = [
      first.schedule(probe.task('a'), { wholeSlot: true }),
      second.schedule(probe.task('b'), { wholeSlot: true }),
      first.schedule(probe.task('c'), { wholeSlot: true }),
      second.schedule(probe.task('d'), { wholeSlot: true }),
    ];
    await waitFor(() => probe.started.length >= 2, { description: 'two whole-slot calls started' });

    // Two of the four slots are free of bulk calls: a per-device call of either process runs now.
    const startedWhenPerDeviceRan = await first.schedule(async () => probe.started.length);
    expect(startedWhenPerDeviceRan).toBe(2);
    await expect(second.schedule(async () => probe.started.length)).resolves.toBe(2);
    expect(probe.peak()).toBe(2);
    await waitFor(() => registry.expose().includes('urs_defender_bulk_slots_waiting 1'), {
      description: "the first process's bulk call counted as waiting for the cap",
    });

    // One ends: one of the two waiting takes its place, and still no more than two run.
    probe.open(probe.started[0] as string);
    await waitFor(() => probe.started.length === 3, { description: 'a waiting whole-slot call started' });
    expect(probe.peak()).toBe(2);

    for (const name of ['a', 'b', 'c', 'd']) probe.open(name);
    await expect(Promise.all(bulk)).resolves.toEqual(['a', 'b', 'c', 'd']);
    expect(probe.peak()).toBe(2);
    await waitFor(async () => (await bulkRunning()) === '0', { description: 'the cap given back' });
  });

  it('a whole-slot call stopped while it waits for the cap, and one that fails, give the cap back', async () => {
    const registry = new Registry();
    const capped = await limiter(3, 2, { metrics: registry });
    const probe = bulkProbe(2);
    const a = capped.schedule(probe.task('a'), { wholeSlot: true });
    const b = capped.schedule(probe.task('b'), { wholeSlot: true });
    await waitFor(() => probe.started.length === 2, { description: 'two whole-slot calls started' });

    const stop = new AbortController();
    const stopped = capped.schedule(probe.task('stopped'), { wholeSlot: true, signal: stop.signal });
    await waitFor(() => registry.expose().includes('urs_defender_bulk_slots_waiting 1'), {
      description: 'the third whole-slot call waiting for the cap',
    });
    const reason = new Error('stopping');
    stop.abort(reason);
    await expect(stopped).rejects.toBe(reason);
    expect(registry.expose()).toContain('urs_defender_bulk_slots_waiting 0');

    probe.open('a');
    await expect(a).resolves.toBe('a');
    const failure = new Error('the page failed');
    await expect(
      capped.schedule(
        async () => {
          throw failure;
        },
        { wholeSlot: true },
      ),
    ).rejects.toBe(failure);
    // Neither the stopped call nor the failed one kept a place under the cap.
    probe.open('c');
    await expect(capped.schedule(probe.task('c'), { wholeSlot: true })).resolves.toBe('c');
    probe.open('b');
    await expect(b).resolves.toBe('b');
    expect(probe.started).not.toContain('stopped');
    expect(probe.peak()).toBe(2);
    await waitFor(async () => (await bulkRunning()) === '0' && (await mainRunning()) === '0', {
      description: 'the cap and the slots given back',
    });
  });

  it('a whole-slot call stopped while it holds the cap and waits for a slot gives the cap back', async () => {
    const capped = await limiter(2, 2);
    const probe = bulkProbe(2);
    const perDevice = gate();
    const busy = capped.schedule(() => perDevice.opened);
    const a = capped.schedule(probe.task('a'), { wholeSlot: true });
    await waitFor(() => probe.started.length === 1, { description: 'a whole-slot call started' });

    const stop = new AbortController();
    const stopped = capped.schedule(probe.task('stopped'), { wholeSlot: true, signal: stop.signal });
    await waitFor(async () => (await bulkRunning()) === '2', {
      description: 'the second whole-slot call holding the cap, waiting for a slot',
    });
    const reason = new Error('stopping');
    stop.abort(reason);
    await expect(stopped).rejects.toBe(reason);
    await waitFor(async () => (await bulkRunning()) === '1', {
      description: "the stopped call's cap given back",
    });

    const c = capped.schedule(probe.task('c'), { wholeSlot: true });
    perDevice.open();
    await busy;
    probe.open('c');
    await expect(c).resolves.toBe('c');
    probe.open('a');
    await expect(a).resolves.toBe('a');
    expect(probe.started).toEqual(['a', 'c']);
    await waitFor(async () => (await bulkRunning()) === '0' && (await mainRunning()) === '0', {
      description: 'the cap and the slots given back',
    });
  });
});

describe('createSharedLimiter given a cap on whole-slot calls it cannot keep', () => {
  it.each([0, 5, 1.5])(
    'refuses a cap of %s for 4 slots, naming the rule, before it opens a connection',
    async (bulkMaxSlots) => {
      const duplicate = jest.spyOn(shared.redis.client, 'duplicate');
      await expect(limiter(4, bulkMaxSlots)).rejects.toThrow(
        `bulkMaxSlots must be a whole number from 1 to maxConcurrent (4), got ${bulkMaxSlots}`,
      );
      // A connection opened for a limiter never made would be left open, with nothing to close it.
      expect(duplicate).not.toHaveBeenCalled();
    },
  );
});

describe('createSharedLimiter when a whole-slot call waits long for its slot', () => {
  /** A per-device call that holds the only slot until its job expires (it ignores its slot's end). */
  function holdUntilExpired(capped: CallLimiter): { settled: Promise<unknown>; end: () => void } {
    const held = gate();
    const settled = capped.schedule(() => held.opened).catch((error: unknown) => error);
    return { settled, end: held.open };
  }

  /** The place under the cap a whole-slot call took, counted as Bottleneck counts jobs done. */
  async function placesTaken(): Promise<string | null> {
    return shared.redis.client.hget(`b_${shared.redis.prefix}defender-bulk_settings`, 'done');
  }

  it('a whole-slot call that waited a slot expiration for its slot runs until its own slot ends, not its place', async () => {
    // The call gets its slot at ~3 s, once the per-device call's job expired; its slot's end is told 2.7 s later.
    // A place lasting two job expirations (its end told at 5.4 s) would cut it at ~2.4 s, as its slot's end.
    const capped = await limiter(1, 1, { jobExpirationMs: 3_000 });
    const perDevice = holdUntilExpired(capped);
    const bulk = capped.schedule(
      (slotEnds) =>
        new Promise((resolve) => slotEnds.addEventListener('abort', () => resolve(slotEnds.reason))),
      { wholeSlot: true },
    );
    const reason = await bulk;
    perDevice.end();
    await perDevice.settled;
    expect(reason).toBeInstanceOf(SlotEndedError);
    expect((reason as SlotEndedError).heldMs).toBe(2_700);
    expect(await placesTaken()).toBe('1');
    await waitFor(async () => (await bulkRunning()) === '0', { description: 'the cap given back' });
  });

  it.each([
    ['asking Redis for each slot', {}],
    ['handing slots from call to call', { handOff: { maxLeaseMs: 1_000 } }],
  ])(
    'a page that waited long for its slot and needs nearly all of it is read in full, not cut (%s)',
    async (_, more) => {
      // The page waits ~4 s for the only slot, then needs 3.5 s of the 3.6 s its slot gives it.
      const capped = await limiter(1, 1, { jobExpirationMs: 4_000, ...more });
      const perDevice = holdUntilExpired(capped);
      const page = capped.schedule(
        (slotEnds) =>
          new Promise((resolve) => {
            const read = setTimeout(() => resolve('read in full'), 3_500);
            slotEnds.addEventListener('abort', () => {
              clearTimeout(read);
              resolve(slotEnds.reason);
            });
          }),
        { wholeSlot: true },
      );
      await expect(page).resolves.toBe('read in full');
      perDevice.end();
      await perDevice.settled;
      expect(await placesTaken()).toBe('1');
    },
  );

  it('a whole-slot call that waits two slot expirations for its slot keeps its place', async () => {
    // Two per-device calls hold the only slot one after the other, each until its job expires (2 s).
    const capped = await limiter(1, 1, { jobExpirationMs: 2_000 });
    const first = holdUntilExpired(capped);
    const second = holdUntilExpired(capped);
    const bulk = capped.schedule(async () => 'read', { wholeSlot: true });
    await expect(bulk).resolves.toBe('read');
    for (const perDevice of [first, second]) perDevice.end();
    await Promise.all([first.settled, second.settled]);
    expect(await placesTaken()).toBe('1');
    await waitFor(async () => (await bulkRunning()) === '0', { description: 'the cap given back' });
  });

  it('a whole-slot call whose place has less than a slot left before it has one asks for a place again, then runs', async () => {
    // Nine per-device calls hold the only slot one after the other, each until its job expires (1 s): the
    // whole-slot call's first place (10 s, its end told at 9 s) has less than a slot left after 8 s.
    const capped = await limiter(1, 1, { jobExpirationMs: 1_000 });
    const perDevice = Array.from({ length: 9 }, () => holdUntilExpired(capped));
    const bulk = capped.schedule(async () => 'read', { wholeSlot: true });
    await expect(bulk).resolves.toBe('read');
    for (const each of perDevice) each.end();
    await Promise.all(perDevice.map((each) => each.settled));
    // Two places under the cap: the one that ran short while the call waited, and the one it ran in.
    expect(await placesTaken()).toBe('2');
    await waitFor(async () => (await bulkRunning()) === '0', { description: 'the cap given back' });
  });
});
