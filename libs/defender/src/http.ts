import type { Agent } from 'node:https';
import type { AxiosResponse } from 'axios';
import type { Logger } from '@urs/logging';
import { type RetryPolicy, retryDelayMs, sleep } from '@urs/resilience';
import type { Registry } from '@urs/telemetry';
import { type ApiResult, classify as classifyAnswer, timedOut } from './answers';
import { CallHealth, type CallHealthOptions } from './call-health';
import { createCallMetrics } from './call-metrics';
import { createCallSlots } from './call-slots';
import { DefenderError, DefenderErrorCode, isDefenderError } from './errors';
import type { CallLimiter } from './limiter';
import { ODataRowScanner, type ODataSink, type RowReader } from './odata-rows';
import type { DefenderEndpointClass, QuotaGate } from './quota';
import { createRequests, type RowsScan, type Slot } from './requests';
import { duration, endedAtDeadline, hostOf, type TokenSource } from './token';

export interface ApiCallerOptions {
  azureTenantId: string;
  /** The application the calls are made as: Microsoft's quotas count per application and tenant. */
  clientId: string;
  /** MDE API base URL, no trailing slash. */
  apiBase: string;
  tokens: TokenSource;
  limiter: CallLimiter;
  quota: QuotaGate;
  httpsAgent: Agent;
  /** Retries of 5xx, resets, timeouts and malformed bodies (exponential backoff, full jitter). */
  retryPolicy: RetryPolicy;
  /**
   * Timeout of one HTTP call, in milliseconds: how long its connection may stay silent, and for a call
   * whose answer is read whole (a device's vulnerabilities) or kept whole (`getRows`: one page of the device
   * list) how long the whole answer may take, so a body that trickles in does not hold its slot until the
   * slot ends. A bulk export page handed out row by row (`scanRows`, `scanInto`) is bounded by its slot only.
   */
  requestTimeoutMs: number;
  /**
   * When the tenant's calls are limited after slow calls in a row, go one at a time or are held back after
   * failures in a row (see CallHealth).
   */
  health?: CallHealthOptions;
  /**
   * The tenant's call health, when the caller keeps it across clients (see DefenderClientDeps.callHealth).
   * Default a new one of `health`.
   */
  callHealth?: CallHealth;
  /** Total time one call may spend waiting out 429s before it fails THROTTLED, in milliseconds. */
  maxThrottleWaitMs: number;
  /**
   * Shortest wait after a 429 that gives no Retry-After (a gateway's), in milliseconds; the backoff when
   * longer. Default 5000: Microsoft's quotas count per minute, so a retry within the backoff's first
   * few hundred milliseconds would mostly draw another 429, for every process the block holds back.
   */
  throttleWaitWithoutRetryAfterMs?: number;
  /**
   * Longest one call waits for the tenant's quota (a window's room, or the block of an earlier 429), in
   * milliseconds: a longer wait fails the call THROTTLED at once, its `retryAfterMs` the wait (see
   * QuotaGate.acquire). Default: no limit, the call waits as long as the quota asks (up to an hour).
   */
  maxQuotaWaitMs?: number;
  /**
   * Longest one call waits, in all, for a place among the degraded tenants' calls (its tenant's last call
   * failed slowly, see CallHealth), in milliseconds: a longer wait fails the call THROTTLED, not sent and not
   * retried (`canRetry` false), as a longer wait for the quota than `maxQuotaWaitMs` does. Those places free
   * one request timeout at a time while other tenants' calls hang: a caller holding something scarce while its
   * call waits (a poller's cycle place) lets go of it. Default: no limit.
   */
  maxDegradedWaitMs?: number;
  /**
   * When every call must be answered by (epoch ms; an access check's time limit): a wait for the quota or out
   * a 429 that would end after it fails the call THROTTLED at once, with the wait asked for, rather than run
   * into the limit and say nothing more. Default none.
   */
  deadline?: number;
  logger: Logger;
  /** Where the calls are counted and timed (see createCallMetrics); none by default. */
  metrics?: Registry;
  random?: () => number;
}

export type { ApiResult } from './answers';

/** An OData answer read row by row: what `toRow` made of each `value` row, and the other top-level members. */
export type RowsResult<T> = { status: 200; rows: T[]; members: Record<string, unknown> } | { status: 404 };

export type { RowsScan } from './requests';

export interface ApiCaller {
  /**
   * GET `pathOrUrl` (a path under the API base, or an absolute `@odata.nextLink`: its path and query on the
   * tenant's own API host, whatever host it names, see Requests.resolveUrl) as one call of `endpoint`'s quota. Resolves 200 with the parsed body or 404; throws DefenderError otherwise.
   */
  get(
    endpoint: DefenderEndpointClass,
    pathOrUrl: string,
    params?: Record<string, string | number>,
    signal?: AbortSignal,
  ): Promise<ApiResult>;
  /**
   * Like `get` for an OData answer (`{"value": [...], ...}`), read as it arrives: each row of `value` is
   * parsed alone and passed to `toRow`, and only what `toRow` returns is kept, so a large page is never
   * held as one body. A retried call starts its rows afresh. An answer without a `value` array is
   * MALFORMED_RESPONSE, as with `odataValue`. Each answer (a page) must arrive whole within the request
   * timeout, like an answer read whole. A `reader` reads the rows it can straight from their bytes
   * (each as `toRow` would have made it), sparing their parse; the others are parsed and given to `toRow`.
   * `onTimeout` 'throw' fails the call at its first answer that does not arrive whole in time, not tried
   * again as is (the device listing asks for a smaller page instead); default 'retry'.
   */
  getRows<T>(
    endpoint: DefenderEndpointClass,
    pathOrUrl: string,
    params: Record<string, string | number> | undefined,
    toRow: (row: unknown) => T,
    signal?: AbortSignal,
    reader?: RowReader<T>,
    onTimeout?: 'retry' | 'throw',
  ): Promise<RowsResult<T>>;
  /**
   * Like `getRows`, but each row goes to `onRow` as soon as it is read and none is kept here, so what a
   * large page leaves behind is only what `onRow` keeps. A retried call hands out its rows again, and the
   * rows an attempt gave before it failed are not taken back: `onRow` must be idempotent (a row given
   * twice changes nothing), as folding distinct CVEs and their highest score is. Its answer has no deadline
   * but its call slot's end; `onTimeout` 'throw' fails the call at the first answer cut there (or silent
   * past the request timeout), not tried again as is (the bulk export asks for a smaller page instead).
   */
  scanRows<T>(
    endpoint: DefenderEndpointClass,
    pathOrUrl: string,
    params: Record<string, string | number> | undefined,
    onRow: (row: T) => void,
    toRow: (row: unknown) => T,
    signal?: AbortSignal,
    reader?: RowReader<T>,
    onTimeout?: 'retry' | 'throw',
  ): Promise<RowsScan>;
  /**
   * Like `scanRows`, but the answer's bytes go to a sink of the caller's as they arrive (a new one per
   * attempt, from `sink`): the rows are the sink's to read, on another thread if it likes.
   */
  scanInto(
    endpoint: DefenderEndpointClass,
    pathOrUrl: string,
    params: Record<string, string | number> | undefined,
    sink: () => ODataSink,
    signal?: AbortSignal,
    onTimeout?: 'retry' | 'throw',
  ): Promise<RowsScan>;
}

/** A quota wait this long (seconds) has the call ask for its token again before it is sent. */
const TOKEN_RECHECK_AFTER_QUOTA_WAIT_S = 1;

/**
 * A tenant's calls to its Defender API: a token (a fresh one once after a 401), the tenant's quota, the
 * retries of transient failures and the waits of 429s, here; the HTTP exchange and its body in requests.ts;
 * the shared call slots and the tenant's call health in call-slots.ts.
 */
export function createApiCaller(options: ApiCallerOptions): ApiCaller {
  const { azureTenantId, apiBase, tokens, limiter, quota, logger } = options;
  /** Whose quota the calls count in (no secret: the ids alone). */
  const app = { azureTenantId, clientId: options.clientId };
  const metrics = options.metrics ? createCallMetrics(options.metrics) : undefined;
  const health = options.callHealth ?? new CallHealth(azureTenantId, options.health);
  const { resolveUrl, send, sendRows, malformed } = createRequests(options);
  const slots = createCallSlots({
    azureTenantId,
    limiter,
    health,
    metrics,
    requestTimeoutMs: options.requestTimeoutMs,
    slowCallMs: options.health?.slowCallMs,
    slowFailureMs: options.health?.slowFailureMs,
    maxDegradedWaitMs: options.maxDegradedWaitMs,
  });

  /** The longest a call may wait for the quota now: its own limit, and no later than the deadline. */
  function maxQuotaWaitMs(): number | undefined {
    if (options.deadline === undefined) return options.maxQuotaWaitMs;
    return Math.min(options.maxQuotaWaitMs ?? Infinity, Math.max(0, options.deadline - Date.now()));
  }

  /**
   * One call (a fresh token once after a 401): `call` runs its request in `slot` and answers either its result
   * or a response to classify.
   */
  async function attempt<R extends ApiResult | RowsScan>(
    endpoint: DefenderEndpointClass,
    url: string,
    signal: AbortSignal | undefined,
    call: (token: string, slot: Slot) => Promise<AxiosResponse<string> | R>,
  ): Promise<ApiResult | R> {
    const path = new URL(url).pathname;
    let refreshed = false;
    // A token before the quota, so that while Entra is down a call fails without spending the tenant's quota.
    let token = (await tokens.getToken(signal)).token;
    for (;;) {
      // Quota first, then the slot: a tenant waiting for its quota must not hold one of the shared slots.
      const asked = performance.now();
      const claim = await quota.acquire(app, endpoint, signal, maxQuotaWaitMs());
      const quotaSeconds = (performance.now() - asked) / 1000;
      // The quota's wait can outlast the token (a tenant that spent its hourly quota waits up to an hour):
      // sent expired, it would spend a call of the quota on a 401, and a second expiry would fail the call.
      // So after a wait the token is asked for again (the same one unless it is due for renewal).
      if (quotaSeconds >= TOKEN_RECHECK_AFTER_QUOTA_WAIT_S) {
        try {
          token = (await tokens.getToken(signal)).token;
        } catch (error) {
          // Not sent: its place in the quota goes back (inSlot gives it back on its own paths).
          claim.release();
          throw error;
        }
      }
      const current = token;
      const response = await call(current, (run, wholeSlot) =>
        slots.inSlot(endpoint, claim, quotaSeconds, signal, run, wholeSlot),
      );
      if (!('headers' in response)) return response;
      if (response.status === 401 && !refreshed) {
        refreshed = true;
        logger.info('defender: 401 from the API, getting a fresh token', { azureTenantId, path });
        // Names the refused token, so the calls that saw the same 401 share one refresh.
        token = (await tokens.refreshToken(signal, current)).token;
        continue;
      }
      return classifyAnswer(response, { azureTenantId, path }, token, endpoint);
    }
  }

  /**
   * Why a call whose caller stopped waiting (`signal`) ended: at a deadline (a signal of
   * `AbortSignal.timeout`: the access test's time limit), with the API not answering, that it did not answer
   * within that time, in words an administrator can act on; otherwise the call's last error.
   */
  function stoppedWith(error: unknown, signal: AbortSignal, url: string, since: number): unknown {
    if (!endedAtDeadline(signal) || !isDefenderError(error, DefenderErrorCode.UNAVAILABLE)) return error;
    if (error.details['networkCode'] === undefined) return error;
    const path = new URL(url).pathname;
    return new DefenderError(
      DefenderErrorCode.UNAVAILABLE,
      `The Defender API (${hostOf(apiBase)}) did not answer tenant ${azureTenantId} on ${path} within ` +
        `${duration(Date.now() - since)}: it may be down, or not reachable from here`,
      { canRetry: true, cause: error, details: { azureTenantId, path } },
    );
  }

  /**
   * The error that ends a call of `endpoint` while the tenant's calls are held back (see CallHealth.heldBack),
   * counted in the call metrics; none when they are not.
   */
  function heldBackNow(endpoint: DefenderEndpointClass, cause?: unknown): DefenderError | undefined {
    const heldBack = health.heldBack(cause);
    if (heldBack) metrics?.heldBack(endpoint);
    return heldBack;
  }

  /**
   * Retries a call on transient failures and waits out 429s (shared with every process via the quota); a
   * call that ran out of its own time only when `onTimeout` is 'retry'.
   */
  async function withRetries<R>(
    endpoint: DefenderEndpointClass,
    url: string,
    signal: AbortSignal | undefined,
    once: () => Promise<R>,
    onTimeout: 'retry' | 'throw' = 'retry',
  ): Promise<R> {
    const since = Date.now();
    let failures = 0;
    let throttles = 0;
    let throttledMs = 0;
    for (;;) {
      try {
        // Held back: the call ends before it takes a token, a quota claim or a slot.
        const heldBack = heldBackNow(endpoint);
        if (heldBack) throw heldBack;
        return await once();
      } catch (error) {
        if (signal?.aborted) throw stoppedWith(error, signal, url, since);
        if (!(error instanceof DefenderError) || !error.canRetry) throw error;
        if (CallHealth.isHeldBack(error)) throw error;
        if (onTimeout === 'throw' && timedOut(error)) throw error;
        // The tenant's calls failed too often in a row: this one ends too, without waiting to be retried, and
        // counts as held back (also the call whose failure starts the hold-back: a poller's listing, asked
        // again minutes later, is never refused during the hold-back itself).
        const heldBack = heldBackNow(endpoint, error);
        if (heldBack) throw heldBack;
        let delayMs: number;
        if (error.code === DefenderErrorCode.THROTTLED) {
          throttles++;
          // At least the backoff: a Retry-After of 0 (or a date already past) would otherwise retry at
          // once, for ever, as the wait never grows.
          delayMs = Math.max(
            error.retryAfterMs ?? options.throttleWaitWithoutRetryAfterMs ?? 5_000,
            retryDelayMs(options.retryPolicy, throttles, options.random),
          );
          // Every process holds this app's endpoint back, not only this call; also when this call gives
          // up on a wait longer than it may take (an hourly quota's 429 asks for up to an hour): otherwise
          // each of its other calls would go out and draw a 429 of its own.
          // Not when Entra ID throttled the token request: the API's quota is not spent, and the token
          // source itself asks Entra again only after its wait.
          if (error.details['tokenRequest'] !== true) await quota.block(app, endpoint, delayMs);
          if (throttledMs + delayMs > options.maxThrottleWaitMs) throw error;
          if (options.deadline !== undefined && Date.now() + delayMs > options.deadline) throw error;
          throttledMs += delayMs;
        } else {
          failures++;
          if (failures >= options.retryPolicy.maxAttempts) throw error;
          delayMs = retryDelayMs(options.retryPolicy, failures, options.random);
        }
        logger.warn('defender: retrying a call', {
          azureTenantId,
          endpoint,
          code: error.code,
          delayMs,
          failures,
          throttles,
          // Microsoft's id of the failed answer, for its support (see answers.ts: requestIdOf).
          ...(error.details['requestId'] === undefined ? {} : { requestId: error.details['requestId'] }),
        });
        await sleep(delayMs, signal);
        // Stopped while waiting to retry: the call ends with why it was being retried.
        if (signal?.aborted) throw stoppedWith(error, signal, url, since);
      }
    }
  }

  /**
   * One OData call read row by row by `send` within `deadlineMs` (sendRows's), with its retries (of timeouts as
   * `onTimeout` says). Without a deadline the call runs until its slot ends if it must, so it takes a slot
   * of its own, never one a call before it held (`wholeSlot`).
   */
  async function scan(
    endpoint: DefenderEndpointClass,
    pathOrUrl: string,
    signal: AbortSignal | undefined,
    deadlineMs: number | undefined,
    send: (
      url: string,
      token: string,
      abortOn: AbortSignal,
      deadlineMs: number | undefined,
    ) => Promise<AxiosResponse<string> | RowsScan>,
    onTimeout?: 'retry' | 'throw',
  ): Promise<RowsScan> {
    const url = resolveUrl(pathOrUrl);
    const result = await withRetries(
      endpoint,
      url,
      signal,
      // The answer is read in the slot as it arrives, so the whole call runs in it.
      () =>
        attempt<RowsScan>(endpoint, url, signal, (token, slot) =>
          slot((abortOn) => send(url, token, abortOn, deadlineMs), deadlineMs === undefined),
        ),
      onTimeout,
    );
    if (result.status === 404 || 'members' in result) return result;
    // Only `send`'s whole-text bodies are classified as 200; a scanned answer never is.
    throw malformed(new URL(url).pathname, 'The Defender API answer was read whole instead of by rows');
  }

  function scanInto(
    endpoint: DefenderEndpointClass,
    pathOrUrl: string,
    params: Record<string, string | number> | undefined,
    sink: () => ODataSink,
    signal?: AbortSignal,
    onTimeout?: 'retry' | 'throw',
  ): Promise<RowsScan> {
    return scan(
      endpoint,
      pathOrUrl,
      signal,
      undefined,
      (url, token, abortOn, deadlineMs) => sendRows(url, token, params, sink, signal, abortOn, deadlineMs),
      onTimeout,
    );
  }

  return {
    get(endpoint, pathOrUrl, params, signal) {
      const url = resolveUrl(pathOrUrl);
      return withRetries(endpoint, url, signal, () =>
        attempt<ApiResult>(endpoint, url, signal, (token, slot) => send(url, token, params, slot, signal)),
      );
    },
    async getRows<T>(
      endpoint: DefenderEndpointClass,
      pathOrUrl: string,
      params: Record<string, string | number> | undefined,
      toRow: (row: unknown) => T,
      signal?: AbortSignal,
      reader?: RowReader<T>,
      onTimeout?: 'retry' | 'throw',
    ): Promise<RowsResult<T>> {
      let rows: T[] = [];
      const result = await scan(
        endpoint,
        pathOrUrl,
        signal,
        // Its rows are kept whole (a page of the device list): the page must arrive within the timeout.
        options.requestTimeoutMs,
        (url, token, abortOn, deadlineMs) => {
          // A retried call starts its rows afresh.
          rows = [];
          const sink = (): ODataSink => new ODataRowScanner<T>((row) => rows.push(row), toRow, reader);
          return sendRows(url, token, params, sink, signal, abortOn, deadlineMs);
        },
        onTimeout,
      );
      return result.status === 404 ? result : { status: 200, rows, members: result.members };
    },
    scanRows(endpoint, pathOrUrl, params, onRow, toRow, signal, reader, onTimeout) {
      const sink = (): ODataSink => new ODataRowScanner(onRow, toRow, reader);
      return scanInto(endpoint, pathOrUrl, params, sink, signal, onTimeout);
    },
    scanInto,
  };
}
