import type { Slots } from './slots';

/**
 * What a whole-slot call answers when its place under the cap ran short (less than a whole slot left) before it
 * had a slot: it asks again.
 */
const CAP_ENDED_BEFORE_SLOT = Symbol('cap ended before the slot');

/** How the cap's waits are shown: one more whole-slot call of this process waiting for it, or one less. */
export interface BulkCapWaits {
  waiting(by: 1 | -1): void;
}

/**
 * A signal that aborts when either of two short-lived ones does (the caller's stop, the place's last moment to
 * start a slot), with its reason. Both live no longer than one wait for a slot, so AbortSignal.any's hold on its
 * sources (nodejs/node#55351) costs nothing.
 */
function eitherEnds(first: AbortSignal, second: AbortSignal): AbortSignal {
  return AbortSignal.any([first, second]);
}

/** How long a place under the cap and a slot of `inner` last, in milliseconds. */
export interface BulkCapTimes {
  /** From a place's start to its end told (the cap's `slotEnds`). */
  placeMs: number;
  /** A slot's job expiration: a whole-slot call started in a slot runs this long at most. */
  slotMs: number;
}

/** Why a call waiting for its slot left the wait: its place could no longer hold a whole slot. */
class PlaceTooShortError extends Error {
  constructor(slotMs: number) {
    super(`the place under the bulk cap has less than a slot (${slotMs} ms) left`);
    this.name = 'PlaceTooShortError';
  }
}

/**
 * A signal that aborts once a place started now has less than a whole slot left (`placeMs - slotMs` from now):
 * a slot started later could outlast the place. `done` clears its timer.
 */
function lastSlotStart(times: BulkCapTimes): { late: AbortSignal; done: () => void } {
  const late = new AbortController();
  const timer = setTimeout(
    () => late.abort(new PlaceTooShortError(times.slotMs)),
    Math.max(0, times.placeMs - times.slotMs),
  );
  return { late: late.signal, done: () => clearTimeout(timer) };
}

/**
 * Caps the slots of `inner` that whole-slot calls (bulk export pages: no deadline of their own, each holding its
 * slot until the page ends, up to a minute) hold at once, through `cap`: a second shared limiter of that many
 * slots. A whole-slot call takes a place under the cap first, then a slot of `inner`, and gives both back when
 * it settles, whichever way (answered, failed, stopped, its slot ended). Always in that order, and a call
 * waiting for the cap holds no slot, so the two never wait for each other in a circle; other calls take a slot
 * of `inner` alone and never wait for the cap, so whole-slot calls can never hold more than the cap's share
 * of the slots, however many tenants read their export at once.
 *
 * The cap's place is held while the call waits for its slot (behind other calls, with no bound), then for the
 * slot's whole time, so `cap`'s jobs last many of `inner`'s (`times`). A call started in a slot runs until that
 * slot ends (its `slotEnds`, never the place's): its page must not be cut short, and counted as too slow an
 * answer, for the time it waited. So a slot must start while the place still has a whole slot left: a call
 * whose place has less leaves the wait (a slot reaching it that late goes back unused), gives the place back
 * and asks for a place again.
 */
export function withBulkCap(inner: Slots, cap: Slots, times: BulkCapTimes, waits?: BulkCapWaits): Slots {
  /** A whole-slot call, under the cap: its place had too little left when this answers so. */
  async function underCap<T>(
    task: (slotEnds: AbortSignal) => Promise<T>,
    signal: AbortSignal | undefined,
  ): Promise<T | typeof CAP_ENDED_BEFORE_SLOT> {
    let waiting = true;
    waits?.waiting(1);
    const stopWaiting = (): void => {
      if (!waiting) return;
      waiting = false;
      waits?.waiting(-1);
    };
    try {
      return await cap.schedule(
        async () => {
          stopWaiting();
          const { late, done } = lastSlotStart(times);
          let started = false;
          try {
            return await inner.schedule<T | typeof CAP_ENDED_BEFORE_SLOT>(
              (slotEnds) => {
                // The slot came as the place ran short: it goes back unused.
                if (late.aborted) return Promise.resolve(CAP_ENDED_BEFORE_SLOT);
                started = true;
                return task(slotEnds);
              },
              // The caller's stop, or the place running short, leaves the wait for a slot at once.
              { wholeSlot: true, signal: signal ? eitherEnds(signal, late) : late },
            );
          } catch (error) {
            if (!started && late.aborted && !signal?.aborted) return CAP_ENDED_BEFORE_SLOT;
            throw error;
          } finally {
            done();
          }
        },
        { signal },
      );
    } finally {
      stopWaiting();
    }
  }

  return {
    async schedule<T>(
      task: (slotEnds: AbortSignal) => Promise<T>,
      options?: { wholeSlot?: boolean; signal?: AbortSignal | undefined },
    ): Promise<T> {
      if (!options?.wholeSlot) return inner.schedule(task, options);
      for (;;) {
        const result = await underCap(task, options.signal);
        if (result !== CAP_ENDED_BEFORE_SLOT) return result;
      }
    },
    ...(inner.mayKeep ? { mayKeep: (held: number) => inner.mayKeep?.(held) ?? Promise.resolve(false) } : {}),
    // `cap` shares its connection with `inner`, which closes both.
    close: () => inner.close(),
  };
}
