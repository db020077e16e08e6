/** The slots of calls in flight (the shape of limiter.ts's CallLimiter, restated as handoff.ts does). */
interface Slots {
  schedule<T>(
    task: (slotEnds: AbortSignal) => Promise<T>,
    options?: { wholeSlot?: boolean; signal?: AbortSignal | undefined },
  ): Promise<T>;
  close(): Promise<void>;
  mayKeep?(held: number): Promise<boolean>;
}

/** What a whole-slot call answers when its place under the cap ended before it had a slot: it asks again. */
const CAP_ENDED_BEFORE_SLOT = Symbol('cap ended before the slot');

/** How the cap's waits are shown: one more whole-slot call of this process waiting for it, or one less. */
export interface BulkCapWaits {
  waiting(by: 1 | -1): void;
}

/**
 * A signal that aborts when either of two short-lived ones does (a slot's end, the cap's end), with its reason.
 * Both live no longer than one call, so AbortSignal.any's hold on its sources (nodejs/node#55351) costs nothing.
 */
function eitherEnds(first: AbortSignal, second: AbortSignal): AbortSignal {
  return AbortSignal.any([first, second]);
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
 * The cap's place is held while the call waits for its slot, so it must outlast that wait and the slot: `cap`'s
 * jobs are given a longer expiration than `inner`'s. Should the cap's place end all the same, the call is
 * stopped as at its slot's end (a place given back while its call still runs would let one whole-slot call
 * more in than the cap); one still waiting for its slot gives both back and asks for the cap again.
 */
export function withBulkCap(inner: Slots, cap: Slots, waits?: BulkCapWaits): Slots {
  /** A whole-slot call, under the cap: its place ended while it waited for a slot when this rejects so. */
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
        async (capEnds) => {
          stopWaiting();
          let started = false;
          try {
            return await inner.schedule(
              (slotEnds) => {
                started = true;
                return task(eitherEnds(slotEnds, capEnds));
              },
              // The caller's stop, or the cap's end, leaves the wait for a slot at once.
              { wholeSlot: true, signal: signal ? eitherEnds(signal, capEnds) : capEnds },
            );
          } catch (error) {
            if (!started && capEnds.aborted && !signal?.aborted) return CAP_ENDED_BEFORE_SLOT;
            throw error;
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
