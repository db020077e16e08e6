import { eitherEnds } from './either-ends';
import type { SlotOptions, Slots } from './slots';

/**
 * What a capped call answers when its place under the cap ran short (less than a whole slot left) before it
 * had a slot: it asks again.
 */
const CAP_ENDED_BEFORE_SLOT = Symbol('cap ended before the slot');

/** How the cap's waits are shown: one more call of this process waiting for a place under it, or one less. */
export interface CapWaits {
  waiting(by: 1 | -1): void;
}

/** How long a place under the cap and a slot of `inner` last, in milliseconds. */
export interface CapTimes {
  /** From a place's start to its end told (the cap's `slotEnds`). */
  placeMs: number;
  /** A slot's job expiration: a call started in a slot runs this long at most. */
  slotMs: number;
}

/** Why a call waiting for its slot left the wait: its place could no longer hold a whole slot. */
class PlaceTooShortError extends Error {
  constructor(slotMs: number) {
    super(`the place under the cap has less than a slot (${slotMs} ms) left`);
    this.name = 'PlaceTooShortError';
  }
}

/**
 * A signal that aborts once a place started now has less than a whole slot left (`placeMs - slotMs` from now):
 * a slot started later could outlast the place. `done` clears its timer.
 */
function lastSlotStart(times: CapTimes): { late: AbortSignal; done: () => void } {
  const late = new AbortController();
  const timer = setTimeout(
    () => late.abort(new PlaceTooShortError(times.slotMs)),
    Math.max(0, times.placeMs - times.slotMs),
  );
  return { late: late.signal, done: () => clearTimeout(timer) };
}

/** Which calls a cap takes in (see withCap). */
interface CapRule {
  /** Whether a call asking for its slot with `options` takes a place under the cap first. */
  takes(options: SlotOptions | undefined): boolean;
  /** What besides the caller's stop ends its wait for a place (not for the slot): it rejects with its reason. */
  leavesOn?(options: SlotOptions): AbortSignal | undefined;
  /** Told once the call has its place, before it waits for its slot. */
  placed?(options: SlotOptions): void;
}

/**
 * Caps the slots of `inner` that some calls (those `rule` takes) hold at once, through `cap`: a second shared
 * limiter of that many slots. Such a call takes a place under the cap first, then a slot of `inner`, and gives
 * both back when it settles, whichever way (answered, failed, stopped, its slot ended). Always in that order,
 * and a call waiting for the cap holds no slot, so the two never wait for each other in a circle; other calls
 * take a slot of `inner` alone and never wait for the cap (nor pay it a round trip to Redis), so the calls it
 * takes can never hold more than the cap's share of the slots, however many of them ask at once.
 *
 * The cap's place is held while the call waits for its slot (behind other calls, with no bound; `inner` may be
 * capped too, the degraded cap's inner being the bulk cap's), then for the slot's whole time, so `cap`'s jobs last
 * many of `inner`'s (`times`). A call started in a slot runs until that
 * slot ends (its `slotEnds`, never the place's): a bulk export page must not be cut short, and counted as too
 * slow an answer, for the time it waited. So a slot must start while the place still has a whole slot left: a
 * call whose place has less leaves the wait (a slot reaching it that late goes back unused), gives the place
 * back and asks for a place again.
 */
function withCap(inner: Slots, cap: Slots, times: CapTimes, rule: CapRule, waits?: CapWaits): Slots {
  /** A call under the cap: its place had too little left when this answers so. */
  async function underCap<T>(
    task: (slotEnds: AbortSignal) => Promise<T>,
    options: SlotOptions,
  ): Promise<T | typeof CAP_ENDED_BEFORE_SLOT> {
    const { signal, wholeSlot } = options;
    let waiting = true;
    waits?.waiting(1);
    const stopWaiting = (): void => {
      if (!waiting) return;
      waiting = false;
      waits?.waiting(-1);
    };
    const placeWait = eitherEnds(signal, rule.leavesOn?.(options));
    try {
      return await cap.schedule(
        async () => {
          stopWaiting();
          placeWait.done();
          rule.placed?.(options);
          const { late, done } = lastSlotStart(times);
          // The caller's stop, or the place running short, leaves the wait for a slot at once.
          const slotWait = eitherEnds(signal, late);
          let started = false;
          try {
            return await inner.schedule<T | typeof CAP_ENDED_BEFORE_SLOT>(
              (slotEnds) => {
                slotWait.done();
                // The slot came as the place ran short: it goes back unused.
                if (late.aborted) return Promise.resolve(CAP_ENDED_BEFORE_SLOT);
                started = true;
                return task(slotEnds);
              },
              // Its degraded ask stays here: the call has its place, and `inner` (the bulk cap, then the slots)
              // must not end its wait when the tenant answers again or its time to wait for a place runs out.
              { ...(wholeSlot === undefined ? {} : { wholeSlot }), signal: slotWait.signal },
            );
          } catch (error) {
            if (!started && late.aborted && !signal?.aborted) return CAP_ENDED_BEFORE_SLOT;
            throw error;
          } finally {
            slotWait.done();
            done();
          }
        },
        { signal: placeWait.signal },
      );
    } finally {
      placeWait.done();
      stopWaiting();
    }
  }

  return {
    async schedule<T>(task: (slotEnds: AbortSignal) => Promise<T>, options?: SlotOptions): Promise<T> {
      if (!options || !rule.takes(options)) return inner.schedule(task, options);
      for (;;) {
        const result = await underCap(task, options);
        if (result !== CAP_ENDED_BEFORE_SLOT) return result;
      }
    },
    ...(inner.mayKeep ? { mayKeep: (held: number) => inner.mayKeep?.(held) ?? Promise.resolve(false) } : {}),
    // `cap` shares its connection with `inner`, which closes both.
    close: () => inner.close(),
  };
}

/**
 * Caps the slots of `inner` that whole-slot calls (bulk export pages: no deadline of their own, each holding its
 * slot until the page ends, up to a minute) hold at once, through `cap` (see withCap): tenants read in bulk
 * never hold more than the cap's share of the slots, however many of them read their export at once.
 */
export function withBulkCap(inner: Slots, cap: Slots, times: CapTimes, waits?: CapWaits): Slots {
  return withCap(inner, cap, times, { takes: (options) => options?.wholeSlot === true }, waits);
}

/**
 * Caps the slots of `inner` that the calls of degraded tenants (those asking with a `degraded` signal: their
 * tenant's last call failed slowly, see CallHealth) hold at once, through `cap` (see withCap), across every
 * process sharing it: however many tenants of however many processes fail together (a regional Defender host
 * that hangs, each call holding its slot for a whole request timeout), the healthy tenants keep the other slots.
 * A degraded call leaves its wait for a place when its `degraded` signal aborts (its tenant answered again, or
 * its time to wait ran out), rejecting with the signal's reason; once it has its place, it waits for what is
 * inside (`inner`) whatever that signal does, and its ask stays here. A bulk export page of a degraded tenant
 * takes its place here first, then its place under the bulk cap (`inner`, withBulkCap), then its slot, always in
 * that order: while it waits for one of these few places it holds no place under the bulk cap and no slot, so
 * healthy tenants' pages never wait behind degraded tenants' pages that wait for a place here. Its place here is
 * held through its wait for the bulk cap, so it lasts at least as long as a place under the bulk cap
 * (limiter.ts, CAP_EXPIRATION_SLOTS).
 */
export function withDegradedCap(inner: Slots, cap: Slots, times: CapTimes, waits?: CapWaits): Slots {
  return withCap(
    inner,
    cap,
    times,
    {
      takes: (options) => options?.degraded !== undefined,
      leavesOn: (options) => options.degraded,
      placed: (options) => options.degradedPlaced?.(),
    },
    waits,
  );
}
