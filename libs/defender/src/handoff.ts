import type { Slots } from './slots';

export interface SlotHandOffOptions {
  /**
   * How long one slot may pass from call to call in this process before it goes back to the shared limiter
   * (so other processes and tenants get their turn), in milliseconds. Default 1000. A slot's Bottleneck job
   * then lasts at most this plus one call, which should stay below the limiter's job expiration: a call still
   * running when the job ends is stopped, and the slot takes no more calls.
   */
  maxLeaseMs?: number;
  /** Calls one slot serves in a row before it goes back to the shared limiter. Default 100. */
  maxCallsPerLease?: number;
  /**
   * When a lease ends and the inner limiter says the slot may stay (`mayKeep`), the lease is renewed in place
   * instead of going back and being asked for again, up to this long in all, in milliseconds. Default 20000,
   * never less than `maxLeaseMs`. Like `maxLeaseMs`, keep it plus one call below the job expiration.
   */
  maxHoldMs?: number;
}

/** How long one answer of `mayKeep` serves every slot whose lease ends, in milliseconds. */
const MAY_KEEP_FRESH_MS = 100;

interface Waiter {
  task: (slotEnds: AbortSignal) => Promise<unknown>;
  wholeSlot: boolean;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/**
 * Settles a caller after the current turn of the event loop. Its continuation (parsing and summarising the
 * answer) would otherwise run before the next call this slot just started is written to its socket (Node
 * writes a request on a tick that waits for every pending promise continuation), leaving the slot idle
 * for that long; deferred, it runs once the request is on its way.
 */
function answerLater(settle: (outcome: unknown) => void, outcome: unknown): void {
  setImmediate(settle, outcome);
}

/**
 * Hands a slot whose call just ended straight to the next call waiting in this process, instead of giving
 * it back to the shared limiter and asking for it again. With the Redis limiter, every slot taken and given
 * back costs Redis round trips (Bottleneck's submit, register and free scripts and a pub/sub message); between
 * two calls that delay leaves the slot idle, so fewer than 10 calls are in flight although work is waiting.
 *
 * Each slot of the inner limiter runs one call at a time, so calls in flight never exceed the inner limit.
 * A slot serves calls in a row for at most `maxLeaseMs` / `maxCallsPerLease`, then goes back to the inner
 * limiter, which shares slots out between processes again, unless the inner limiter says nobody else
 * waits: then the lease goes on (up to `maxHoldMs` in all), sparing the round trips of giving the slot back
 * and asking for it again. Calls wait in this process in arrival order. A `wholeSlot` call (no deadline of its
 * own: it may run until its slot ends) is only ever a slot's first call: a lease of any age (up to `maxHoldMs`)
 * would leave it that much less time, so the slot that reaches it having served a call goes back instead.
 */
export function withSlotHandOff(inner: Slots, options: SlotHandOffOptions = {}): Slots {
  const maxLeaseMs = options.maxLeaseMs ?? 1_000;
  const maxCallsPerLease = options.maxCallsPerLease ?? 100;
  const maxHoldMs = Math.max(maxLeaseMs, options.maxHoldMs ?? 20_000);
  const waiting: Waiter[] = [];
  /** Leases begun and not ended. */
  let held = 0;
  let keepAnswer: { at: number; answer: Promise<boolean> } | undefined;

  /** Whether a lease that ended may go on (one look at the inner limiter, shared by the slots). */
  async function mayRenew(heldForMs: number): Promise<boolean> {
    if (!inner.mayKeep || heldForMs + maxLeaseMs > maxHoldMs) return false;
    const now = Date.now();
    if (!keepAnswer || now - keepAnswer.at > MAY_KEEP_FRESH_MS)
      keepAnswer = { at: now, answer: inner.mayKeep(held) };
    try {
      return await keepAnswer.answer;
    } catch {
      return false; // cannot tell: give the slot back, as without renewal
    }
  }

  /** Slots asked of the inner limiter and not started yet: each will serve a waiting call when it starts. */
  let requested = 0;
  /** Every slot asked for and not settled, so close() lets them end before the inner limiter goes. */
  const leases = new Set<Promise<void>>();

  /**
   * Runs waiting calls one after another in a slot, until its lease ends or nothing waits. Each call is told
   * when the slot ends (`slotEnds`); an ended slot takes no more calls.
   */
  async function serve(slotEnds: AbortSignal): Promise<void> {
    const heldSince = Date.now();
    let leaseStarted = heldSince;
    let calls = 0;
    let served = 0;
    for (;;) {
      if (calls >= maxCallsPerLease || Date.now() - leaseStarted >= maxLeaseMs) {
        if (!(await mayRenew(Date.now() - heldSince))) return;
        leaseStarted = Date.now();
        calls = 0;
      }
      // The callers whose call just ended queue their next one in their continuations: let them run first.
      if (waiting.length === 0) await new Promise((resolve) => setImmediate(resolve));
      if (slotEnds.aborted) return;
      // A call that runs until its slot ends would have only what is left of this one: the slot goes back,
      // and the call gets a slot of its own, asked for as this one ends.
      if (served > 0 && waiting[0]?.wholeSlot) return;
      const next = waiting.shift();
      if (!next) return;
      calls++;
      served++;
      try {
        answerLater(next.resolve, await next.task(slotEnds));
      } catch (error) {
        answerLater(next.reject, error);
      }
    }
  }

  function requestSlot(): void {
    requested++;
    let began = false;
    const lease: Promise<void> = inner
      .schedule(async (slotEnds) => {
        began = true;
        requested--;
        held++;
        try {
          await serve(slotEnds);
        } finally {
          held--;
        }
      })
      .then(
        () => {
          if (waiting.length > requested) requestSlot();
        },
        (error: unknown) => {
          // The slot itself could not be had (e.g. the limiter's Redis failed): the call it was asked for fails.
          // (A slot that began and then expired has served its calls; those settle on their own.)
          if (!began) {
            requested--;
            waiting.shift()?.reject(error);
          }
          if (waiting.length > requested) requestSlot();
        },
      )
      .finally(() => leases.delete(lease));
    leases.add(lease);
  }

  return {
    schedule<T>(
      task: (slotEnds: AbortSignal) => Promise<T>,
      options?: { wholeSlot?: boolean; signal?: AbortSignal | undefined },
    ): Promise<T> {
      const signal = options?.signal;
      if (signal?.aborted) return Promise.reject(signal.reason);
      return new Promise<T>((resolve, reject) => {
        const wholeSlot = options?.wholeSlot ?? false;
        // A call stopped while it waits leaves the queue at once; a slot asked for it serves the next one.
        const stop = (): void => {
          const index = waiting.indexOf(waiter);
          if (index >= 0) waiting.splice(index, 1);
          reject(signal?.reason);
        };
        const settled =
          <V>(settle: (value: V) => void) =>
          (value: V): void => {
            signal?.removeEventListener('abort', stop);
            settle(value);
          };
        const waiter: Waiter = {
          task: (slotEnds) => {
            signal?.removeEventListener('abort', stop);
            return task(slotEnds);
          },
          wholeSlot,
          resolve: settled(resolve as (value: unknown) => void),
          reject: settled(reject),
        };
        signal?.addEventListener('abort', stop, { once: true });
        waiting.push(waiter);
        if (waiting.length > requested) requestSlot();
      });
    },
    async close() {
      // Slots asked for while calls were waiting may start after the last call ended; they find nothing to do
      // and end at once. Waited for (a few seconds at most), so they do not meet a closed connection.
      const settled = Promise.allSettled([...leases]);
      await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
      await inner.close();
    },
  };
}
