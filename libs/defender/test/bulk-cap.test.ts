import { withBulkCap } from '../src/bulk-cap';

// Stand-ins for the shared slots and the cap, whose slots the test hands out when it likes: the cases here are
// the moments a real limiter reaches only by chance (a slot that comes as the place runs short).

/** A slot asked for and not handed out yet. */
interface Asked {
  task: (slotEnds: AbortSignal) => Promise<unknown>;
  signal: AbortSignal | undefined;
  settle: { resolve: (value: unknown) => void; reject: (error: unknown) => void };
}

/** Slots handed out by the test (`grant`), with the signal each task was given (`ends`). */
function handedSlots(): {
  slots: Parameters<typeof withBulkCap>[0];
  asked: Asked[];
  grant: () => { ends: AbortController };
} {
  const asked: Asked[] = [];
  return {
    asked,
    slots: {
      schedule: <T>(
        task: (slotEnds: AbortSignal) => Promise<T>,
        options?: { signal?: AbortSignal | undefined },
      ) =>
        new Promise<T>((resolve, reject) => {
          asked.push({
            task,
            signal: options?.signal,
            settle: { resolve: resolve as (value: unknown) => void, reject },
          });
        }),
      close: async () => undefined,
    },
    grant: () => {
      const next = asked.shift();
      if (!next) throw new Error('no slot asked for');
      const ends = new AbortController();
      next.task(ends.signal).then(next.settle.resolve, next.settle.reject);
      return { ends };
    },
  };
}

const TIMES = { placeMs: 9_000, slotMs: 1_000 };

beforeEach(() => jest.useFakeTimers());
afterEach(() => jest.useRealTimers());

describe('withBulkCap', () => {
  it('a call that has its slot is given that slot’s end alone: its place ending does not stop it', async () => {
    const inner = handedSlots();
    const cap = handedSlots();
    const capped = withBulkCap(inner.slots, cap.slots, TIMES);
    let given: AbortSignal | undefined;
    let finish = (): void => undefined;
    const page = capped.schedule(
      (slotEnds) => {
        given = slotEnds;
        return new Promise<string>((resolve) => (finish = () => resolve('read')));
      },
      { wholeSlot: true },
    );
    const place = cap.grant();
    await jest.advanceTimersByTimeAsync(7_000);
    const slot = inner.grant();
    await jest.advanceTimersByTimeAsync(0);
    place.ends.abort(new Error('the place ended'));
    expect(given?.aborted).toBe(false);
    expect(given === slot.ends.signal).toBe(true);
    finish();
    await expect(page).resolves.toBe('read');
  });

  it('a slot that comes once the place has less than a slot left goes back unused, and a place is asked again', async () => {
    const inner = handedSlots();
    const cap = handedSlots();
    const capped = withBulkCap(inner.slots, cap.slots, TIMES);
    const ran: number[] = [];
    const page = capped.schedule(
      async () => {
        ran.push(cap.asked.length);
        return 'read';
      },
      { wholeSlot: true },
    );
    cap.grant();
    await jest.advanceTimersByTimeAsync(0);
    const wait = inner.asked[0]?.signal;
    await jest.advanceTimersByTimeAsync(TIMES.placeMs - TIMES.slotMs - 1);
    expect(wait?.aborted).toBe(false);
    await jest.advanceTimersByTimeAsync(1);
    // The wait is left; a slot handed out at that very moment all the same finds the place too short.
    expect(wait?.aborted).toBe(true);
    inner.grant();
    await jest.advanceTimersByTimeAsync(0);
    expect(ran).toEqual([]);
    expect(cap.asked).toHaveLength(1);
    cap.grant();
    await jest.advanceTimersByTimeAsync(0);
    inner.grant();
    await expect(page).resolves.toBe('read');
    expect(ran).toEqual([0]);
  });
});
