/**
 * Calls in flight of all degraded tenants together: in one process (see DegradedCalls), and across every
 * process sharing the call slots (the shared limiter's cap, SharedLimiterOptions.degradedMaxSlots). Two of the
 * 10 shared slots: the healthy tenants keep the other 8 however many tenants of however many processes fail at
 * once.
 */
export const DEGRADED_CALLS_LIMIT = 2;

export interface Waiter {
  /** `placed`: a place among the degraded tenants' was handed to the call (DegradedCalls.wakeFree). */
  wake: (placed: boolean) => void;
}

/**
 * One call's turn (CallHealth.turn, `start`, `passTurn`): the places among the degraded tenants' handed to it
 * while it waited (DegradedCalls.wakeFree), its own until it starts (`start` takes one) or passes its turn
 * (`passTurn` hands them on). Calls that name no turn of their own share their tenant's.
 */
export interface CallTurn {
  placesHanded: number;
}

/**
 * The calls in flight of one process's degraded tenants (those whose last call failed slowly, see
 * CallHealth), all tenants together: at most `limit` at once. Each tenant's own limits do not bound several
 * tenants failing together (a regional Defender host, or the egress path to it, that stops answering for
 * all of them): 10 tenants held to one call at a time each would still keep all 10 shared slots, each call
 * for a whole request timeout, over and over until each was held back, and a healthy tenant's calls would
 * each wait for one of those timeouts. A tenant's calls count here from its first slow failure until a call
 * is answered, those already in flight then included; a call that may not go waits for a place before it
 * asks for a slot, so it holds none meanwhile (nor a bulk export page's place under the bulk cap, taken
 * with the slot). The slots are shared by every process: so is a second cap of the same size (ScheduleOptions
 * .degraded), whose place a degraded call takes after this one's, with its slot (see CallHealth.degradedTurn).
 * This one counts the calls in flight of a tenant that turned degraded, those already sent included, and keeps
 * the calls of a process waiting in their order here, not in Redis.
 */
export class DegradedCalls {
  private inFlight = 0;
  /** Places handed to woken calls (`wakeFree`) that they have neither taken (`take`) nor handed on (`handOn`). */
  private handed = 0;
  /** The calls in flight of each degraded tenant (its CallHealth) that has any. */
  private readonly inFlightOf = new Map<object, number>();
  private readonly waiting: { owner: object; waiter: Waiter }[] = [];

  constructor(readonly limit = DEGRADED_CALLS_LIMIT) {}

  /** Whether one more call of a degraded tenant may be in flight now: a place neither taken nor handed to a call. */
  hasPlace(): boolean {
    return this.inFlight + this.handed < this.limit;
  }

  /** A call handed a place (`wakeFree`) starts: the place counts in flight (`add`) from now on. */
  take(): void {
    this.handed--;
  }

  /** A call handed a place (`wakeFree`) does not take it: it goes to the next waiting call. */
  handOn(): void {
    this.handed--;
    this.wakeFree();
  }

  /**
   * `count` calls of `owner`, a degraded tenant, more in flight (fewer when negative: their places go to
   * waiting calls).
   */
  add(owner: object, count: number): void {
    this.inFlight += count;
    const own = (this.inFlightOf.get(owner) ?? 0) + count;
    if (own > 0) this.inFlightOf.set(owner, own);
    else this.inFlightOf.delete(owner);
    if (count < 0) this.wakeFree();
  }

  /** Calls of degraded tenants in flight (`urs_defender_degraded_calls_running`). */
  running(): number {
    return this.inFlight;
  }

  /** Calls of degraded tenants waiting for a place (`urs_defender_degraded_calls_waiting`). */
  waitingCalls(): number {
    return this.waiting.length;
  }

  /**
   * Degraded tenants with calls in flight or waiting for a place (`urs_defender_degraded_tenants`): those
   * sharing the places now. A degraded tenant that calls nothing (between its cycles) is not counted: it
   * takes no place, and its client may be let go of before it calls again.
   */
  tenants(): number {
    const owners = new Set(this.inFlightOf.keys());
    for (const { owner } of this.waiting) owners.add(owner);
    return owners.size;
  }

  /**
   * Resolves to true when a place is handed to the call (`wakeFree`: it takes it or hands it on), to false when
   * `owner` wakes its own calls or `signal` aborts.
   */
  wait(owner: object, signal: AbortSignal | undefined): Promise<boolean> {
    return waitIn(this.waiting, signal, (waiter) => ({ owner, waiter }));
  }

  /**
   * Hands each free place to one waiting call, the longest waiting first: the place is that call's until it
   * takes it or hands it on, so a place freed lets one call ask for a slot, not every call that looks for a
   * place before the first one starts (the others would each take a slot only to give it back).
   */
  wakeFree(): void {
    for (let next = this.waiting[0]; next && this.hasPlace(); next = this.waiting[0]) {
      this.waiting.shift();
      this.handed++;
      next.waiter.wake(true);
    }
  }

  /** Wakes every call of `owner` (its tenant answered again, or is held back): none of them waits for a place. */
  wakeOf(owner: object): void {
    const own = this.waiting.filter((entry) => entry.owner === owner);
    if (own.length === 0) return;
    this.waiting.splice(0, this.waiting.length, ...this.waiting.filter((entry) => entry.owner !== owner));
    for (const { waiter } of own) waiter.wake(false);
  }
}

/**
 * Every process's tenants share this one by default (CallHealthOptions.degradedCalls); createCallMetrics serves
 * its gauges.
 */
export const processDegradedCalls = new DegradedCalls();

/**
 * Waits in `queue` (as `entry` makes it) until woken (to whether it was handed a place, see Waiter) or `signal`
 * aborts (to false): an aborted wait leaves the queue, a woken one stops listening to `signal`.
 */
export function waitIn<E>(
  queue: E[],
  signal: AbortSignal | undefined,
  entry: (waiter: Waiter) => E,
): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    if (signal?.aborted) return resolve(false);
    const stopped = (): void => {
      const index = queue.indexOf(queued);
      if (index >= 0) queue.splice(index, 1);
      resolve(false);
    };
    const queued = entry({
      wake: (placed) => {
        signal?.removeEventListener('abort', stopped);
        resolve(placed);
      },
    });
    signal?.addEventListener('abort', stopped, { once: true });
    queue.push(queued);
  });
}
