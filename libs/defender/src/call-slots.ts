import axios from 'axios';
import Bottleneck from 'bottleneck';
import { TIMED_OUT, outcomeOf } from './answers';
import { CallHealth, type CallOutcome } from './call-health';
import type { CallTurn } from './degraded-calls';
import type { CallMetrics } from './call-metrics';
import { eitherEnds } from './either-ends';
import { DefenderError, DefenderErrorCode, isDefenderError } from './errors';
import { type CallLimiter, SlotEndedError } from './limiter';
import type { DefenderEndpointClass, QuotaClaim } from './quota';
import { duration, endedAtDeadline } from './token';

// A tenant's calls in the shared call slots (http.ts's `inSlot`): the tenant's health says whether a call
// may go once it holds a slot, its waits and outcome are counted, and a call stopped by its slot's end or
// before it was sent fails in words an operator can act on.

/** What a call's slot answers when the tenant's health does not let the call go now (CallHealth.start). */
const NOT_NOW = Symbol('not now');

/**
 * Why a degraded tenant's call left its wait for a place among the degraded tenants' calls of every process: its
 * tenant is degraded no longer (a call answered) or is held back. It asks again, as its tenant's health says.
 */
class DegradedTurnEndedError extends Error {
  constructor() {
    super("the tenant's calls no longer wait for a place among the degraded tenants' calls");
    this.name = 'DegradedTurnEndedError';
  }
}

/** Why a call left its wait for a place among the degraded tenants' calls: it waited as long as it may. */
class DegradedWaitRanOutError extends Error {
  constructor(maxMs: number) {
    super(`waited ${maxMs} ms for a place among the degraded tenants' calls`);
    this.name = 'DegradedWaitRanOutError';
  }
}

/**
 * The time one call may wait for a place among the degraded tenants' calls (CallSlotsOptions.maxDegradedWaitMs),
 * counted only while it waits for one (`signal` starts or resumes the count, `pause` stops it: the call has its
 * place, or waits for something else), summed across its waits. `signal` aborts when the time runs out (a
 * DegradedWaitRanOutError) or the caller stops (its reason); without a limit it is the caller's own. `done`
 * clears its timer and takes its listener off the caller's signal.
 */
function degradedWaitLimit(
  maxMs: number | undefined,
  caller: AbortSignal | undefined,
): { signal: () => AbortSignal | undefined; pause: () => void; ranOut: () => boolean; done: () => void } {
  let ends: AbortController | undefined;
  let timer: NodeJS.Timeout | undefined;
  let spentMs = 0;
  let since: number | undefined;
  const stopped = (): void => ends?.abort(caller?.reason);
  const pause = (): void => {
    if (since === undefined) return;
    spentMs += performance.now() - since;
    since = undefined;
    clearTimeout(timer);
  };
  return {
    signal() {
      if (maxMs === undefined) return caller;
      if (!ends) {
        ends = new AbortController();
        if (caller?.aborted) stopped();
        else caller?.addEventListener('abort', stopped, { once: true });
      }
      const counted = ends;
      if (since === undefined && !counted.signal.aborted) {
        since = performance.now();
        timer = setTimeout(
          () => counted.abort(new DegradedWaitRanOutError(maxMs)),
          Math.max(0, maxMs - spentMs),
        );
      }
      return counted.signal;
    },
    pause,
    ranOut: () => ends?.signal.reason instanceof DegradedWaitRanOutError,
    done() {
      pause();
      caller?.removeEventListener('abort', stopped);
    },
  };
}

/**
 * What a degraded tenant's call asks for its slot with (ScheduleOptions.degraded): a signal that aborts when its
 * tenant's spell of being degraded ends (`turn`, CallHealth.degradedTurn: a DegradedTurnEndedError) or when
 * `wait` does (the call's time to wait for such a place, or its caller's stop: their reason). `done` takes its
 * listeners off both.
 */
function degradedAsk(
  turn: AbortSignal,
  wait: AbortSignal | undefined,
): { signal: AbortSignal; done: () => void } {
  const ask = new AbortController();
  const turnEnded = (): void => {
    done();
    ask.abort(new DegradedTurnEndedError());
  };
  const waitEnded = (): void => {
    done();
    ask.abort(wait?.reason);
  };
  const done = (): void => {
    turn.removeEventListener('abort', turnEnded);
    wait?.removeEventListener('abort', waitEnded);
  };
  if (wait?.aborted) waitEnded();
  else if (turn.aborted) turnEnded();
  else {
    turn.addEventListener('abort', turnEnded);
    wait?.addEventListener('abort', waitEnded);
  }
  return { signal: ask.signal, done };
}

export interface CallSlotsOptions {
  azureTenantId: string;
  limiter: CallLimiter;
  health: CallHealth;
  metrics: CallMetrics | undefined;
  /** See ApiCallerOptions.requestTimeoutMs. */
  requestTimeoutMs: number;
  /** See CallHealthOptions.slowCallMs. */
  slowCallMs?: number | undefined;
  /** See CallHealthOptions.slowFailureMs. */
  slowFailureMs?: number | undefined;
  /**
   * Longest a call waits, in all, for a place among the degraded tenants' calls (its own process's and those
   * shared by every process), in milliseconds, summed over the times it waits for one (not while it holds one
   * and waits for a shared slot, or waits for its tenant's own turn): a longer wait fails it
   * THROTTLED, not sent and not tried again (`canRetry` false), as a wait for the quota longer than the
   * caller's limit does (ApiCallerOptions.maxQuotaWaitMs). Default: no limit.
   */
  maxDegradedWaitMs?: number | undefined;
}

export interface CallSlots {
  /** Runs `call` in one of the shared slots (see createCallSlots's `inSlot`). */
  inSlot<T extends { status: number }>(
    endpoint: DefenderEndpointClass,
    claim: QuotaClaim,
    quotaSeconds: number,
    signal: AbortSignal | undefined,
    call: (abortOn: AbortSignal) => Promise<T>,
    wholeSlot?: boolean,
  ): Promise<T>;
}

export function createCallSlots(options: CallSlotsOptions): CallSlots {
  const { azureTenantId, limiter, health, metrics } = options;
  /**
   * An attempt answered after holding its slot this long shows the tenant's API to be slow: it limits the
   * tenant's calls in flight.
   */
  const slowCallMs = options.slowCallMs ?? Math.min(2_000, options.requestTimeoutMs / 4);
  /**
   * An attempt that failed after holding its slot this long counts for the tenant's health, where a reset or a
   * 503 that came at once never does. Far below `slowCallMs`: a failure answers nothing, so a tenant failing
   * every call just under `slowCallMs` would hold the slots as long as a slow one, unseen. Below the request
   * timeout, so a call that ran out of time always counts.
   */
  const slowFailureMs = options.slowFailureMs ?? Math.min(250, slowCallMs);
  /**
   * A bulk export page is read in its slot as it arrives, and a page of 50,000 rows takes many seconds from a
   * healthy API: its answer never shows the API slow, and its failure counts only after half the request
   * timeout.
   */
  const slowBulkFailureMs = Math.max(slowFailureMs, options.requestTimeoutMs / 2);

  /**
   * Runs `call` in one of the shared slots. The call counts against the tenant's quota from when it is sent,
   * as Microsoft counts it, and its waits (`quotaSeconds` before, the slot's here) and outcome go to the metrics;
   * a call that fails before it is sent (stopped while it waited, refused by the tenant's hold-back, given no
   * slot by the limiter) gives its place in the quota back.
   * The tenant's health decides, once the slot is held, whether the call may go now; one that may not gives
   * the slot back at once and asks for one again at its turn. Its turn (a place of the tenant's and, the tenant
   * degraded, one of the process's places for degraded tenants) is waited for before the slot; the tenant
   * degraded, the call then takes one of the places of degraded tenants' calls shared by every process
   * (ScheduleOptions.degraded, withDegradedCap) with its slot, before a bulk export page's place under the bulk
   * cap (withBulkCap): a call waiting for its turn or a place holds no slot (nor, waiting for a degraded place, a
   * place under the bulk cap), and once in the slot it never waits for its turn, so none of them wait in a
   * circle. Its waits for degraded tenants' places end after `maxDegradedWaitMs` in all (`degradedWaitTooLong`);
   * its wait for the bulk cap, its degraded place held, does not count. A `wholeSlot` call (no deadline of its own) takes a slot
   * of its own (ScheduleOptions).
   */
  async function inSlot<T extends { status: number }>(
    endpoint: DefenderEndpointClass,
    claim: QuotaClaim,
    quotaSeconds: number,
    signal: AbortSignal | undefined,
    call: (abortOn: AbortSignal) => Promise<T>,
    wholeSlot = false,
  ): Promise<T> {
    try {
      return await sendInSlot(endpoint, claim, quotaSeconds, signal, call, wholeSlot);
    } catch (error) {
      // Nothing once the call was sent (a claim settles once).
      claim.release();
      throw error;
    }
  }

  /** `inSlot`'s call, its claim told when it is sent. */
  async function sendInSlot<T extends { status: number }>(
    endpoint: DefenderEndpointClass,
    claim: QuotaClaim,
    quotaSeconds: number,
    signal: AbortSignal | undefined,
    call: (abortOn: AbortSignal) => Promise<T>,
    wholeSlot: boolean,
  ): Promise<T> {
    const queued = performance.now();
    const degradedWait = degradedWaitLimit(options.maxDegradedWaitMs, signal);
    // The places among the degraded tenants' handed to this call (see CallTurn).
    const turn: CallTurn = { placesHanded: 0 };
    try {
      return await sendInTurn(
        endpoint,
        claim,
        quotaSeconds,
        signal,
        call,
        wholeSlot,
        queued,
        degradedWait,
        turn,
      );
    } finally {
      degradedWait.done();
    }
  }

  /** `sendInSlot`'s turns: the call waits for its turn, then its slot, until it is sent or fails. */
  async function sendInTurn<T extends { status: number }>(
    endpoint: DefenderEndpointClass,
    claim: QuotaClaim,
    quotaSeconds: number,
    signal: AbortSignal | undefined,
    call: (abortOn: AbortSignal) => Promise<T>,
    wholeSlot: boolean,
    queued: number,
    degradedWait: ReturnType<typeof degradedWaitLimit>,
    turn: CallTurn,
  ): Promise<T> {
    for (;;) {
      const waited = await health.turn(signal, degradedWait.signal, turn);
      degradedWait.pause();
      if (signal?.aborted) {
        health.passTurn(turn);
        throw notSent(endpoint, queued, signal, waited && health.waitText(waited));
      }
      if (waited === 'degraded' && degradedWait.ranOut()) {
        health.passTurn(turn);
        throw degradedWaitTooLong(endpoint, queued);
      }
      // The tenant degraded: a place among the degraded tenants' calls of every process, with the slot.
      const degradedTurn = health.degradedTurn();
      const degraded = degradedTurn && degradedAsk(degradedTurn, degradedWait.signal());
      let sentAt = 0;
      let slotEnded: AbortSignal | undefined;
      /** Whether the tenant's health and the metrics were told how the call ended (once, see `ended`). */
      let told = false;
      const ended = (result: { response: T } | { error: unknown }): void => {
        if (told) return;
        told = true;
        if ('response' in result) {
          const { status } = result.response;
          health.leave(answered(endpoint, result.response, sentAt), `answered ${status}`);
          metrics?.called(endpoint, status, (performance.now() - sentAt) / 1000);
          return;
        }
        const failure = failureOf(result.error, signal, slotEnded);
        health.leave(failure !== undefined && failedSlowly(endpoint, sentAt) ? 'failed' : 'neither', failure);
        metrics?.called(endpoint, 'error', (performance.now() - sentAt) / 1000);
      };
      try {
        const response = await limiter.schedule(
          async (slotEnds) => {
            degradedWait.pause();
            // Stopped while it waited: not sent (axios would still write a request whose signal already
            // aborted, one call more in flight than the slots).
            if (signal?.aborted) throw notSent(endpoint, queued, signal);
            if (!health.start(degraded !== undefined, turn)) return NOT_NOW;
            slotEnded = slotEnds;
            sentAt = performance.now();
            claim.sent();
            metrics?.waited(endpoint, quotaSeconds, (sentAt - queued) / 1000);
            // Aborted by the caller's stop or the end of its slot.
            const request = eitherEnds(signal, slotEnds);
            // The tenant's health is told in the slot, before the slot serves its next call: told after, a
            // round of calls failing together would each have sent the next queued call of the same tenant.
            try {
              const response = await call(request.signal);
              ended({ response });
              return response;
            } catch (error) {
              ended({ error });
              throw error;
            } finally {
              request.done();
            }
          },
          // Stopped while it waits for a slot: it leaves the queue at once (a stop need not wait for a slot
          // other processes hold, up to a minute for a bulk export page).
          // Its time to wait for a place stops counting once it has one (withDegradedCap tells).
          {
            wholeSlot,
            signal,
            ...(degraded ? { degraded: degraded.signal, degradedPlaced: degradedWait.pause } : {}),
          },
        );
        // Its turn passes on in `turn`, where the call waits again (see CallHealth.waitForOwnPlace).
        if (response === NOT_NOW) continue;
        return response;
      } catch (error) {
        if (sentAt > 0) {
          // The limiter gave the slot up before the call ended (its job expired): the call stops now.
          ended({ error });
        } else {
          if (CallHealth.isHeldBack(error)) metrics?.heldBack(endpoint);
          health.passTurn(turn);
          if (signal?.aborted && error === signal.reason)
            throw notSent(
              endpoint,
              queued,
              signal,
              degraded && `${health.waitText('degraded')}, or a shared slot`,
            );
          // Its tenant answered again, or is held back, while it waited for a place: it asks again.
          if (error instanceof DegradedTurnEndedError) continue;
          if (error instanceof DegradedWaitRanOutError) throw degradedWaitTooLong(endpoint, queued);
        }
        throw slotExpired(error, endpoint, slotEnded, sentAt, wholeSlot) ?? error;
      } finally {
        degradedWait.pause();
        degraded?.done();
      }
    }
  }

  /**
   * A call that waited longer than it may for a place among the degraded tenants' calls (`maxDegradedWaitMs`):
   * not sent, THROTTLED like a wait for the quota longer than the caller allows, and not tried again by the call
   * (`canRetry` false): its caller (the poller's cycle) ends, freeing what it held, and is tried again later.
   */
  function degradedWaitTooLong(endpoint: DefenderEndpointClass, queued: number): DefenderError {
    return new DefenderError(
      DefenderErrorCode.THROTTLED,
      `A ${endpoint} call to the Defender API of tenant ${azureTenantId} was not sent: it waited ` +
        `${duration(options.maxDegradedWaitMs ?? 0)} in all, as long as it may, for ` +
        `${health.waitText('degraded')} (queued ${duration(performance.now() - queued)} ago); it is tried again later`,
      { canRetry: false, details: { azureTenantId, endpoint, degradedWaitMs: options.maxDegradedWaitMs } },
    );
  }

  /** What an answer (its status, and its body when read whole) sent at `sentAt` shows of the tenant's health. */
  function answered(
    endpoint: DefenderEndpointClass,
    response: { status: number; data?: unknown },
    sentAt: number,
  ): CallOutcome {
    const outcome = outcomeOf(response);
    if (outcome === 'failed') return failedSlowly(endpoint, sentAt) ? 'failed' : 'neither';
    if (outcome === 'answered' && endpoint !== 'bulk' && performance.now() - sentAt >= slowCallMs)
      return 'answeredSlowly';
    return outcome;
  }

  /** Whether a call sent at `sentAt` that failed now held its slot long enough to count. */
  function failedSlowly(endpoint: DefenderEndpointClass, sentAt: number): boolean {
    return performance.now() - sentAt >= (endpoint === 'bulk' ? slowBulkFailureMs : slowFailureMs);
  }

  /**
   * A call its caller stopped before it was sent: it waited all that time for one of the shared slots, or for
   * `waitedFor` (its tenant's turn, see CallHealth.waitText) when it was stopped there, so at a deadline (the
   * access test's time limit) the API is not to blame.
   */
  function notSent(
    endpoint: DefenderEndpointClass,
    queued: number,
    signal: AbortSignal,
    waitedFor = 'one of the shared call slots, all busy with other calls',
  ): DefenderError {
    return new DefenderError(
      DefenderErrorCode.UNAVAILABLE,
      endedAtDeadline(signal)
        ? `A ${endpoint} call to the Defender API of tenant ${azureTenantId} was not sent within the time ` +
            `allowed: it waited ${duration(performance.now() - queued)} for ${waitedFor}`
        : `A ${endpoint} call to the Defender API of tenant ${azureTenantId} was stopped before it was sent`,
      { canRetry: false, details: { azureTenantId, endpoint } },
    );
  }

  /**
   * Why a call that was sent failed for the API's own reasons (no answer in time, a connection lost, the
   * slot's end), in a few words; undefined when it did not: its caller stopped it, or the answer was not JSON.
   */
  function failureOf(
    error: unknown,
    signal: AbortSignal | undefined,
    slotEnded: AbortSignal | undefined,
  ): string | undefined {
    if (signal?.aborted) return undefined;
    if (slotEnded?.reason instanceof SlotEndedError) return 'its call slot ended';
    let code: string | undefined;
    if (axios.isAxiosError(error)) code = error.code ?? 'ERROR';
    else if (isDefenderError(error, DefenderErrorCode.UNAVAILABLE))
      code = String(error.details['networkCode'] ?? 'ERROR');
    if (code === undefined) return undefined;
    return TIMED_OUT.has(code) ? `no answer within ${options.requestTimeoutMs / 1000} s` : code;
  }

  /**
   * The call's slot ended while it ran (its body kept arriving, slowly, until the slot had been held as long as
   * a job may), so it was stopped, or the limiter gave the slot up: a failure of this read, tried again like an
   * outage, in words an operator can act on, not the limiter's own "This job timed out". It says how long the
   * call itself ran (from `sentAt`): a call handed a slot by another (withSlotHandOff) had less than the slot.
   * A `wholeSlot` call, whose only deadline is its slot's end, ran out of its own time (`ranOutOfSlot`, see
   * `timedOut`); any other call may have had only the rest of a slot.
   */
  function slotExpired(
    error: unknown,
    endpoint: DefenderEndpointClass,
    slotEnds: AbortSignal | undefined,
    sentAt: number,
    wholeSlot: boolean,
  ): DefenderError | undefined {
    let held: string;
    if (slotEnds?.reason instanceof SlotEndedError) held = duration(slotEnds.reason.heldMs);
    else if (error instanceof Bottleneck.BottleneckError && /timed out/.test(error.message))
      held = error.message.replace(/^This job timed out after /, '').replace(/\.$/, '');
    else return undefined;
    return new DefenderError(
      DefenderErrorCode.UNAVAILABLE,
      `A ${endpoint} call to the Defender API of tenant ${azureTenantId} ` +
        (sentAt > 0 ? `ran ${duration(performance.now() - sentAt)} and ` : '') +
        `was stopped when its call slot ended (held ${held}, as long as the limiter allows): its answer came too slowly` +
        (endpoint === 'bulk' ? '; a smaller URS_BULK_PAGE_SIZE makes each page shorter' : ''),
      {
        canRetry: true,
        cause: error,
        details: { azureTenantId, endpoint, ...(wholeSlot ? { ranOutOfSlot: true } : {}) },
      },
    );
  }

  return { inSlot };
}
