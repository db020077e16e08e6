import { DefenderError, DefenderErrorCode } from './errors';

export interface CallHealthOptions {
  /**
   * Slow failures in a row (see CallHealth) after which the tenant's calls go one at a time: a tenant whose
   * API hangs then holds one of the shared slots, not all of them. Default 3. Each call answered doubles what
   * may be in flight again, until the tenant's calls are free once more.
   */
  oneAtATimeAfter?: number;
  /**
   * Slow failures in a row after which the tenant's calls are held back (they fail at once, their retries are
   * not made) for `holdBackMs`; then one call is tried again. Default 10.
   */
  holdBackAfter?: number;
  /** How long calls are held back, in milliseconds. Default 30000. */
  holdBackMs?: number;
  /**
   * In flight above which a recovering tenant's calls are free again (no gate at all). Default 10, the shared
   * limit of calls in flight.
   */
  freeAbove?: number;
  /**
   * How long a call may hold its slot, in milliseconds, before it shows the tenant's API to be slow, whether
   * it was answered or failed (createCallSlots measures it). Default `min(2000, requestTimeoutMs / 4)`: far
   * below the request timeout, so an API that answers every call just in time is seen as slow too, and 40
   * times a call at the benchmark's 50 ms. A full page of the device list may take longer; the listing asks
   * for its pages one after the other, so a limit on its calls in flight never slows it.
   */
  slowCallMs?: number;
  /**
   * Slow calls in a row (answered or failed) after which the tenant has at most `slowLimit` calls in flight.
   * Default 3.
   */
  slowAfter?: number;
  /**
   * Calls in flight of a tenant whose API answers slowly. Default a fifth of `freeAbove` (2 of 10): the other
   * tenants keep most of the shared slots, and the slow tenant, its calls answered within 4.8 s, still spends
   * its hourly quota of device calls (1,500, one every 2.4 s).
   */
  slowLimit?: number;
  now?: () => number;
}

/**
 * How an attempt ended, for the tenant's health: answered; answered slowly, having held its slot long;
 * failed slowly (no answer in time, a body that kept trickling, a 503 after a long wait); or neither (a fast
 * failure, a 429, a call its caller stopped).
 */
export type CallOutcome = 'answered' | 'answeredSlowly' | 'failed' | 'neither';

interface Waiter {
  wake: () => void;
}

/**
 * One tenant's Defender calls: how many may be in flight, from what the last ones showed. While its calls
 * are answered the tenant is not held back at all (the shared slots and its quota are its only limits). A
 * tenant whose API stops answering (hangs, trickles a body) would otherwise keep all 10 shared slots busy
 * with its calls, their timeouts and their retries, while every other tenant waits: after `oneAtATimeAfter`
 * slow failures in a row its calls go one at a time, after `holdBackAfter` they fail at once for
 * `holdBackMs`, and the first call answered lets the tenant's calls out again, doubling at each answer.
 * Only slow failures count: a connection reset or a 503 that comes at once holds a slot for a moment, and a
 * passing blip of them must not cost a healthy tenant its cycle (the vuln-fetcher's own cut-off stops a
 * tenant whose calls keep failing that way). A tenant whose API answers, but slowly, would keep the slots
 * just as well (its two batches queue 20 calls, the slots are given in turn): after `slowAfter` slow calls in
 * a row, answered or failed, it has at most `slowLimit` calls in flight; its answers still count as answers
 * (they lift a hold-back), and the first call answered fast lets its calls out again, doubling at each one.
 * Of this process only: a tenant's batches go to one vuln-fetcher (they are keyed by tenant).
 */
export class CallHealth {
  private readonly oneAtATimeAfter: number;
  private readonly holdBackAfter: number;
  private readonly holdBackMs: number;
  private readonly freeAbove: number;
  private readonly slowAfter: number;
  private readonly slowLimit: number;
  private readonly now: () => number;
  private failuresInARow = 0;
  /** Slow calls in a row, answered or failed. */
  private slowInARow = 0;
  /** Calls that may be in flight; Infinity while the tenant's calls are free. */
  private limit = Infinity;
  private inFlight = 0;
  private heldBackUntil = 0;
  private lastFailure = '';
  /** The failures in a row that began the hold-back, for its message. */
  private heldBackAfterFailures = 0;
  private readonly waiting: Waiter[] = [];

  constructor(
    private readonly azureTenantId: string,
    options: CallHealthOptions = {},
  ) {
    this.oneAtATimeAfter = options.oneAtATimeAfter ?? 3;
    this.holdBackAfter = options.holdBackAfter ?? 10;
    this.holdBackMs = options.holdBackMs ?? 30_000;
    this.freeAbove = options.freeAbove ?? 10;
    this.slowAfter = options.slowAfter ?? 3;
    this.slowLimit = options.slowLimit ?? Math.max(1, Math.round(this.freeAbove / 5));
    this.now = options.now ?? Date.now;
  }

  /**
   * Whether one more of the tenant's calls may be sent now (always, while its calls are free); if so it
   * counts in flight until `leave`. Called once the call holds its shared slot, so a call that may not go
   * gives the slot straight back and waits for its `turn`: calls queued for a slot before the tenant's
   * trouble showed do not keep the slots from other tenants. Throws UNAVAILABLE while the tenant's calls
   * are held back (see `heldBack`).
   */
  start(): boolean {
    const heldBack = this.heldBack();
    if (heldBack) throw heldBack;
    if (this.freePlaces() === 0) return false;
    this.inFlight++;
    return true;
  }

  /**
   * Resolves when one more of the tenant's calls may go, or must end held back: at once while its calls are
   * free or a place is free, else when a call in flight ends and leaves its place to this one (the calls that
   * waited longest first), or `signal` aborts. `start` decides, once the call holds its slot: another call
   * may have taken the place meanwhile, and this one then waits again.
   */
  turn(signal?: AbortSignal): Promise<void> {
    if (this.freePlaces() > 0 || this.holdingBack()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const stopped = (): void => {
        const index = this.waiting.indexOf(waiter);
        if (index >= 0) this.waiting.splice(index, 1);
        resolve();
      };
      const waiter: Waiter = {
        wake: () => {
          signal?.removeEventListener('abort', stopped);
          resolve();
        },
      };
      signal?.addEventListener('abort', stopped, { once: true });
      this.waiting.push(waiter);
    });
  }

  /** A call given a turn did not take it (its caller stopped it): the place goes to the next waiting call. */
  passTurn(): void {
    this.wake(this.freePlaces());
  }

  /**
   * The call that `start` let go ended: answered (fast or slowly), failed slowly for the API's own reasons
   * (`failure` says how, for the message of a hold-back), or neither.
   */
  leave(outcome: CallOutcome, failure = ''): void {
    this.inFlight--;
    if (outcome === 'answered' || outcome === 'answeredSlowly') {
      this.failuresInARow = 0;
      this.heldBackUntil = 0;
      this.slowInARow = outcome === 'answered' ? 0 : this.slowInARow + 1;
      const doubled = this.limit * 2 > this.freeAbove ? Infinity : this.limit * 2;
      this.limit = this.slowInARow >= this.slowAfter ? Math.min(doubled, this.slowLimit) : doubled;
    } else if (outcome === 'failed') {
      this.lastFailure = failure;
      this.failuresInARow++;
      this.slowInARow++;
      if (this.slowInARow >= this.slowAfter) this.limit = Math.min(this.limit, this.slowLimit);
      if (this.failuresInARow >= this.oneAtATimeAfter) this.limit = 1;
      if (this.failuresInARow >= this.holdBackAfter) {
        this.heldBackUntil = this.now() + this.holdBackMs;
        this.heldBackAfterFailures = this.failuresInARow;
        this.limit = 1; // once the hold-back ends, one call tries the API again
      }
    }
    // As many waiting calls look again as may go now; all of them when they are held back (each then ends).
    this.wake(this.holdingBack() ? this.waiting.length : this.freePlaces());
  }

  /**
   * The error that ends a call while the tenant's calls are held back (with `cause`, the call's own last
   * failure, if any); none when they are not.
   */
  heldBack(cause?: unknown): DefenderError | undefined {
    if (!this.holdingBack()) return undefined;
    const until = this.heldBackUntil;
    return new DefenderError(
      DefenderErrorCode.UNAVAILABLE,
      `The Defender API of tenant ${this.azureTenantId} failed ${this.heldBackAfterFailures} calls in a row ` +
        `(last: ${this.lastFailure}); its calls are held back until ${new Date(until).toISOString()}, ` +
        'then one is tried again',
      { canRetry: true, cause, details: { azureTenantId: this.azureTenantId, heldBackUntil: until } },
    );
  }

  /** Whether `error` is one `heldBack` gave: the call is over, retrying it now cannot help. */
  static isHeldBack(error: unknown): boolean {
    return error instanceof DefenderError && error.details['heldBackUntil'] !== undefined;
  }

  /** Calls that may start now besides those in flight (Infinity while the tenant's calls are free). */
  private freePlaces(): number {
    return Math.max(0, this.limit - this.inFlight);
  }

  private holdingBack(): boolean {
    return this.now() < this.heldBackUntil;
  }

  /** Wakes the `count` calls that waited longest. */
  private wake(count: number): void {
    for (const waiter of this.waiting.splice(0, count)) waiter.wake();
  }
}
