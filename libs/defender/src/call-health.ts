import { DefenderError, DefenderErrorCode } from './errors';
import {
  type CallTurn,
  type DegradedCalls,
  processDegradedCalls,
  waitIn,
  type Waiter,
} from './degraded-calls';

/**
 * What a call waited for before it could ask for a slot (CallHealth.turn): a place of its tenant's own, or one
 * of the process's places for degraded tenants.
 */
export type TurnWait = 'tenant' | 'degraded';

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
   * How long an answered call may hold its slot, in milliseconds, before it shows the tenant's API to be slow
   * (createCallSlots measures it). Default `min(2000, requestTimeoutMs / 4)`: far
   * below the request timeout, so an API that answers every call just in time is seen as slow too, and 40
   * times a call at the benchmark's 50 ms. A full page of the device list may take longer; the listing asks
   * for its pages one after the other, so a limit on its calls in flight never slows it.
   */
  slowCallMs?: number;
  /**
   * How long a failed call (no answer in time, a connection lost, a 5xx) may hold its slot, in milliseconds,
   * before it counts as a slow failure. Default `min(250, slowCallMs)`: a failure costs the slots what it held
   * them for, answered or not, and a tenant whose API fails every call just under `slowCallMs` (a 503 after
   * 1.9 s) would otherwise hold ~2 of the 10 slots, its 5 attempts of every call made, without its health ever
   * stepping in. Only failures that come at once (a reset, a quick 503: a passing blip) do not count.
   */
  slowFailureMs?: number;
  /**
   * The calls in flight of this process's degraded tenants (see DegradedCalls), which this tenant's count in
   * from its first slow failure until a call is answered. Default the process's own, of DEGRADED_CALLS_LIMIT
   * (2) places; the shared limiter caps them across every process as well (`degradedTurn`).
   */
  degradedCalls?: DegradedCalls;
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
 * Several tenants failing together are bounded as a whole: from its first slow failure until a call is
 * answered, a tenant's calls share the process's few places for degraded tenants (DegradedCalls), and as many
 * shared by every process (`degradedTurn`).
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
  private readonly degradedCalls: DegradedCalls;
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
  /** The turn of the calls that name none of their own (see CallTurn). */
  private readonly sharedTurn: CallTurn = { placesHanded: 0 };
  /** Aborts when the tenant's present spell of being degraded ends (see `degradedTurn`). */
  private degradedEnds: AbortController | undefined;

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
    this.degradedCalls = options.degradedCalls ?? processDegradedCalls;
  }

  /**
   * Whether one more of the tenant's calls may be sent now (always, while its calls are free); if so it
   * counts in flight until `leave`. Called once the call holds its shared slot, so a call that may not go
   * gives the slot straight back and waits for its `turn`: calls queued for a slot before the tenant's
   * trouble showed do not keep the slots from other tenants. Throws UNAVAILABLE while the tenant's calls
   * are held back (see `heldBack`). A call of a degraded tenant that asked for its slot as a healthy tenant's
   * (`tookDegradedPlace` false: its tenant turned degraded while it waited, see `degradedTurn`) may not go: it
   * asks again, for a place among the degraded tenants' calls of every process first. A place handed to the call
   * (`turn`) is the one it takes; its tenant healthy again, it needs none and hands it on.
   */
  start(tookDegradedPlace = true, turn: CallTurn = this.sharedTurn): boolean {
    const heldBack = this.heldBack();
    if (heldBack) throw heldBack;
    if (!this.degraded()) this.handOn(turn);
    if (!this.mayStart(turn) || (this.degraded() && !tookDegradedPlace)) return false;
    this.inFlight++;
    if (this.degraded()) {
      if (turn.placesHanded > 0) {
        turn.placesHanded--;
        this.degradedCalls.take();
      }
      this.degradedCalls.add(this, 1);
    }
    return true;
  }

  /**
   * Resolves when one more of the tenant's calls may go, or must end held back: at once while its calls are
   * free or a place is free (and, the tenant degraded, one of the process's places for degraded tenants),
   * else when a call in flight ends and leaves its place to this one (the calls that waited longest first),
   * or `signal` aborts. `start` decides, once the call holds its slot: another call may have taken the place
   * meanwhile, and this one then waits again; a place among the degraded tenants' is handed to one waiting call
   * (`turn`'s own, see CallTurn) and kept for it until it starts or passes its turn, so no other call takes it
   * meanwhile. It waits here, before it asks for a slot, so it holds none.
   * Resolves to what the call last waited for, if it waited (a call stopped meanwhile says so, see `waitText`).
   * A wait for a place among the degraded tenants' ends on `degradedWait()`'s signal (default `signal`): the
   * caller's stop, or the call's time to wait for such a place running out.
   */
  async turn(
    signal?: AbortSignal,
    degradedWait: () => AbortSignal | undefined = () => signal,
    turn: CallTurn = this.sharedTurn,
  ): Promise<TurnWait | undefined> {
    let waited: TurnWait | undefined;
    for (;;) {
      if (this.holdingBack() || signal?.aborted) return waited;
      if (this.freePlaces() === 0) {
        waited = 'tenant';
        await this.waitForOwnPlace(signal, turn);
      } else if (this.degraded() && turn.placesHanded === 0 && !this.degradedCalls.hasPlace()) {
        waited = 'degraded';
        const ends = degradedWait();
        if (ends?.aborted) return waited;
        if (await this.degradedCalls.wait(this, ends)) turn.placesHanded++;
      } else return waited;
    }
  }

  /**
   * While the tenant is degraded (and not held back), a signal that aborts when that ends (a call answered, or
   * the calls held back): its calls ask for their slot with it (ScheduleOptions.degraded), taking one of the
   * places of degraded tenants' calls shared by every process first, and leave that wait when it aborts (to ask
   * again as a healthy tenant's calls, or to end held back). None while the tenant is healthy: its calls ask for
   * a slot alone.
   */
  degradedTurn(): AbortSignal | undefined {
    if (!this.degraded() || this.holdingBack()) return undefined;
    if (!this.degradedEnds || this.degradedEnds.signal.aborted) this.degradedEnds = new AbortController();
    return this.degradedEnds.signal;
  }

  /** What a call that waited for `wait` (see `turn`) waited for, in words for its error. */
  waitText(wait: TurnWait): string {
    return wait === 'degraded'
      ? `one of the ${this.degradedCalls.limit} places kept for the calls of tenants whose last call failed ` +
          "slowly (this tenant's did), all taken by their calls"
      : "its tenant's turn: slow calls or failures of the tenant's API have limited its calls in flight " +
          `(${this.limit} now), all taken`;
  }

  /**
   * Waits for a place of the tenant's own. A call handed a place among the degraded tenants' may come here
   * instead of taking it (its tenant's limit dropped meanwhile, or it lost its own place at `start` to another
   * of the tenant's calls): the place then goes to the next waiting call, or that call would wait, a place free,
   * until another degraded call ends (up to a whole request timeout).
   */
  private async waitForOwnPlace(signal: AbortSignal | undefined, turn: CallTurn): Promise<void> {
    this.handOn(turn);
    await waitIn(this.waiting, signal, (waiter) => waiter);
  }

  /**
   * A call given a turn (`turn`) did not take it (its caller stopped it, or the tenant is held back): the place
   * goes to the next waiting call, the tenant's own or, among the degraded tenants', the next one's.
   */
  passTurn(turn: CallTurn = this.sharedTurn): void {
    this.wake(this.freePlaces());
    this.handOn(turn);
  }

  /** Hands the places among the degraded tenants' handed to `turn` on to the next waiting calls. */
  private handOn(turn: CallTurn): void {
    for (; turn.placesHanded > 0; turn.placesHanded--) this.degradedCalls.handOn();
  }

  /**
   * The call that `start` let go ended: answered (fast or slowly), failed slowly for the API's own reasons
   * (`failure` says how, for the message of a hold-back), or neither.
   */
  leave(outcome: CallOutcome, failure = ''): void {
    const wasDegraded = this.degraded();
    this.inFlight--;
    if (wasDegraded) this.degradedCalls.add(this, -1);
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
    this.countDegraded(wasDegraded);
    // As many waiting calls look again as may go now; all of them when they are held back (each then ends).
    this.wake(this.holdingBack() ? this.waiting.length : this.freePlaces());
  }

  /**
   * Its calls in flight join the degraded tenants' (its first slow failure) or leave them (a call answered):
   * then its calls waiting for a place among them go (they need none), as they do held back (each then ends),
   * those waiting here and those waiting for a place shared by every process (`degradedTurn`'s signal) alike.
   */
  private countDegraded(wasDegraded: boolean): void {
    const degraded = this.degraded();
    if (degraded && !wasDegraded) this.degradedCalls.add(this, this.inFlight);
    if (!degraded && wasDegraded) this.degradedCalls.add(this, -this.inFlight);
    if (!degraded || this.holdingBack()) {
      this.degradedCalls.wakeOf(this);
      this.degradedEnds?.abort();
    }
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

  /**
   * Whether the tenant is degraded: its last call ended in a slow failure (see DegradedCalls). A call
   * answered, slowly or not, ends it; a fast failure or a 429 changes nothing.
   */
  private degraded(): boolean {
    return this.failuresInARow > 0;
  }

  /**
   * Whether one more call may start now: a place of the tenant's, and one among the degraded tenants' (handed
   * to its `turn`, or free).
   */
  private mayStart(turn: CallTurn): boolean {
    return (
      this.freePlaces() > 0 && (!this.degraded() || turn.placesHanded > 0 || this.degradedCalls.hasPlace())
    );
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
    for (const waiter of this.waiting.splice(0, count)) waiter.wake(false);
  }
}
