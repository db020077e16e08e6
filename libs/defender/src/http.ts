import type { Agent } from 'node:https';
import type { Readable } from 'node:stream';
import Bottleneck from 'bottleneck';
import axios, {
  AxiosError,
  type AxiosAdapter,
  type AxiosResponse,
  type InternalAxiosRequestConfig,
} from 'axios';
import type { Logger } from '@urs/logging';
import { type RetryPolicy, retryDelayMs, sleep } from '@urs/resilience';
import type { Registry } from '@urs/telemetry';
import { CallHealth, type CallHealthOptions } from './call-health';
import { createCallMetrics } from './call-metrics';
import {
  type ApiResult,
  type CallOf,
  TIMED_OUT,
  classify as classifyAnswer,
  malformed as malformedAnswer,
  notJson as notJsonAnswer,
  outcomeOf,
  unreachable as unreachableCall,
} from './answers';
import { DefenderError, DefenderErrorCode, isDefenderError } from './errors';
import { type CallLimiter, SlotEndedError } from './limiter';
import { MalformedODataError, ODataRowScanner, type ODataSink, type RowReader } from './odata-rows';
import type { DefenderEndpointClass, QuotaClaim, QuotaGate } from './quota';
import { duration, endedAtDeadline, hostOf, type TokenSource } from './token';

export interface ApiCallerOptions {
  azureTenantId: string;
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
  /** When the tenant's calls go one at a time, or are held back, after failures in a row (see CallHealth). */
  health?: CallHealthOptions;
  /** Total time one call may spend waiting out 429s before it fails THROTTLED, in milliseconds. */
  maxThrottleWaitMs: number;
  logger: Logger;
  /** Where the calls are counted and timed (see createCallMetrics); none by default. */
  metrics?: Registry;
  random?: () => number;
}

export type { ApiResult } from './answers';

/** An OData answer read row by row: what `toRow` made of each `value` row, and the other top-level members. */
export type RowsResult<T> = { status: 200; rows: T[]; members: Record<string, unknown> } | { status: 404 };

/** An OData answer whose rows were handed out one by one: the other top-level members. */
export type RowsScan = { status: 200; members: Record<string, unknown> } | { status: 404 };

export interface ApiCaller {
  /**
   * GET `pathOrUrl` (a path under the API base, or an absolute `@odata.nextLink` on the same origin) as one
   * call of `endpoint`'s quota. Resolves 200 with the parsed body or 404; throws DefenderError otherwise.
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
   */
  getRows<T>(
    endpoint: DefenderEndpointClass,
    pathOrUrl: string,
    params: Record<string, string | number> | undefined,
    toRow: (row: unknown) => T,
    signal?: AbortSignal,
    reader?: RowReader<T>,
  ): Promise<RowsResult<T>>;
  /**
   * Like `getRows`, but each row goes to `onRow` as soon as it is read and none is kept here, so what a
   * large page leaves behind is only what `onRow` keeps. A retried call hands out its rows again, and the
   * rows an attempt gave before it failed are not taken back: `onRow` must be idempotent (a row given
   * twice changes nothing), as folding distinct CVEs and their highest score is.
   */
  scanRows<T>(
    endpoint: DefenderEndpointClass,
    pathOrUrl: string,
    params: Record<string, string | number> | undefined,
    onRow: (row: T) => void,
    toRow: (row: unknown) => T,
    signal?: AbortSignal,
    reader?: RowReader<T>,
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
  ): Promise<RowsScan>;
}

/**
 * Runs a request with `abortOn`, for at most `ms`: one that runs out of time fails as axios's own timeout
 * does (ECONNABORTED), whether its answer never began or keeps trickling in. axios's `timeout` alone is a
 * silence timeout: a body that sends a byte now and then is never stopped by it.
 */
async function withinDeadline<T>(
  abortOn: AbortSignal,
  ms: number,
  run: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const deadline = new AbortController();
  const stop = (): void => deadline.abort();
  const timer = setTimeout(stop, ms);
  if (abortOn.aborted) stop();
  else abortOn.addEventListener('abort', stop, { once: true });
  try {
    return await run(deadline.signal);
  } catch (error) {
    if (deadline.signal.aborted && !abortOn.aborted)
      throw new AxiosError(`timeout of ${ms}ms exceeded`, AxiosError.ECONNABORTED);
    throw error;
  } finally {
    clearTimeout(timer);
    abortOn.removeEventListener('abort', stop);
  }
}

/** The variables axios takes a proxy from (either case), as it reads them on every request. */
const PROXY_VARIABLES = ['https_proxy', 'http_proxy', 'all_proxy'];

/** Whether the environment names a proxy axios would use (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, any case). */
export function environmentHasProxy(env: NodeJS.ProcessEnv = process.env): boolean {
  return PROXY_VARIABLES.some((name) => Boolean(env[name] || env[name.toUpperCase()]));
}

/**
 * Runs one call in one of the shared slots (the caller's `inSlot`, bound to its endpoint, quota claim and
 * signal). The call sends its request with `abortOn`: aborted by the caller's signal or by the slot's end.
 */
type Slot = <T extends { status: number }>(call: (abortOn: AbortSignal) => Promise<T>) => Promise<T>;

/** What a call's slot answers when the tenant's health does not let the call go now (CallHealth.start). */
const NOT_NOW = Symbol('not now');

/** A quota wait this long (seconds) has the call ask for its token again before it is sent. */
const TOKEN_RECHECK_AFTER_QUOTA_WAIT_S = 1;

/**
 * A request's signal: aborted by the caller's, if any, or by the end of its slot. `done` takes its listeners
 * off both, which outlive the request (the caller's signal is often the service's own, for weeks). Not
 * `AbortSignal.any`: on Node 20 every signal it makes stays in the long-lived one's set of dependants
 * (nodejs/node#55351), one per call.
 */
function requestSignal(
  signal: AbortSignal | undefined,
  slotEnds: AbortSignal,
): { signal: AbortSignal; done: () => void } {
  if (!signal) return { signal: slotEnds, done: () => undefined };
  const request = new AbortController();
  const sources = [signal, slotEnds];
  const abort = (): void => {
    done();
    request.abort((signal.aborted ? signal : slotEnds).reason);
  };
  const done = (): void => {
    for (const source of sources) source.removeEventListener('abort', abort);
  };
  if (signal.aborted || slotEnds.aborted) abort();
  else for (const source of sources) source.addEventListener('abort', abort);
  return { signal: request.signal, done };
}

export function createApiCaller(options: ApiCallerOptions): ApiCaller {
  const { azureTenantId, apiBase, tokens, limiter, quota, logger } = options;
  const metrics = options.metrics ? createCallMetrics(options.metrics) : undefined;
  const health = new CallHealth(azureTenantId, options.health);
  /**
   * A failed attempt counts for the tenant's health only when it held its slot this long: half the request
   * timeout, so a call that ran out of time always does, a reset or a 503 that came at once never.
   */
  const slowFailureMs = options.requestTimeoutMs / 2;
  const origin = new URL(apiBase).origin;
  /** The API base's own path (a gateway's `/mde`), without its last slash; '' for a host's root. */
  const basePath = new URL(apiBase).pathname.replace(/\/+$/, '');
  const http = axios.create({
    httpsAgent: options.httpsAgent,
    timeout: options.requestTimeoutMs,
    // Bodies are parsed here, so a truncated or invalid body becomes MALFORMED_RESPONSE, not a string.
    responseType: 'text',
    transformResponse: [(data: unknown) => data],
    validateStatus: () => true,
    maxRedirects: 0,
    // axios looks for a proxy in the environment on every request (~2 % of the vuln-fetcher's CPU at 200
    // calls/s). A process started without one is told so once; with one, axios keeps reading it (and
    // NO_PROXY) as before.
    ...(environmentHasProxy() ? {} : { proxy: false as const }),
  });
  /** What `http` sends a request with: the slot of a whole-text call covers this adapter only (see `send`). */
  const httpAdapter: AxiosAdapter = axios.getAdapter('http');
  const callOf = (url: string): CallOf => ({ azureTenantId, path: new URL(url).pathname });
  const unreachable = (error: unknown, url: string, signal: AbortSignal | undefined): DefenderError =>
    unreachableCall(error, callOf(url), signal?.aborted === true, options.requestTimeoutMs);
  const malformed = (path: string, message: string): DefenderError =>
    malformedAnswer({ azureTenantId, path }, message);
  const notJson = (path: string, error: Error): DefenderError =>
    notJsonAnswer({ azureTenantId, path }, error);

  function resolveUrl(pathOrUrl: string): string {
    if (pathOrUrl.startsWith('/')) return `${apiBase}${pathOrUrl}`;
    let link: URL;
    try {
      link = new URL(pathOrUrl);
    } catch {
      throw new DefenderError(
        DefenderErrorCode.MALFORMED_RESPONSE,
        'The API returned a next link that is not a URL',
        {
          canRetry: true,
          details: { azureTenantId },
        },
      );
    }
    // A next link may name another host of the same service (the legacy or the global one); only its path
    // and query are followed, on the tenant's own API host, so the bearer token never goes anywhere else;
    // under the API base's own path, when it has one and the link does not carry it already.
    const path =
      basePath === '' || link.pathname.startsWith(`${basePath}/`)
        ? link.pathname
        : `${basePath}${link.pathname}`;
    return new URL(`${path}${link.search}`, origin).toString();
  }

  /**
   * One call whose body is read whole. axios prepares the request (merging its configs, the headers, the
   * transforms) before the call waits for its slot, and only its HTTP adapter runs in the slot, so a slot
   * freed by one call reaches the next request sooner: from one per-device answer to the next request,
   * median 0.30–0.32 → 0.21–0.22 ms (10,000 devices, two interleaved pairs). The rest of a slot's ~2 ms
   * between two calls is the two processes' TLS, sockets and wake-ups.
   */
  async function send(
    url: string,
    token: string,
    params: Record<string, string | number> | undefined,
    slot: Slot,
    signal?: AbortSignal,
  ): Promise<AxiosResponse<string>> {
    /** What the slot itself failed with (the limiter's Redis, a call stopped before it was sent). */
    let slotFailure: unknown;
    try {
      return await http.get<string>(url, {
        params,
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
        adapter: (config: InternalAxiosRequestConfig) =>
          slot((abortOn) =>
            withinDeadline(abortOn, options.requestTimeoutMs, (request) =>
              httpAdapter({ ...config, signal: request }),
            ),
          ).catch((error: unknown) => {
            if (!axios.isAxiosError(error)) slotFailure = error;
            throw error;
          }),
        ...(signal ? { signal } : {}),
      });
    } catch (error) {
      // A slot that could not be had fails the call with that reason, as before the slot moved into the
      // adapter: the API was never asked. (With its signal aborted, axios puts its own cancellation in place
      // of an adapter's error.)
      if (slotFailure !== undefined) throw slotFailure;
      if (!axios.isAxiosError(error)) throw error;
      throw unreachable(error, url, signal);
    }
  }

  /**
   * `readRows` within `deadlineMs` when given: each page of the device list must arrive whole within the
   * request timeout, as a device's vulnerabilities must, or a body that trickles (a byte now and then, never
   * silent long enough for the idle timeout) holds its call slot until the slot ends (~a minute) every cycle.
   * The deadline is per page, never over a walk of many pages. The bulk export's pages (50,000 rows, tens of
   * MB) go without one: the slot's end bounds them.
   */
  async function sendRows(
    url: string,
    token: string,
    params: Record<string, string | number> | undefined,
    makeSink: () => ODataSink,
    signal: AbortSignal | undefined,
    abortOn: AbortSignal,
    deadlineMs?: number,
  ): Promise<AxiosResponse<string> | RowsScan> {
    if (deadlineMs === undefined) return readRows(url, token, params, makeSink, signal, abortOn);
    try {
      return await withinDeadline(abortOn, deadlineMs, (request) =>
        readRows(url, token, params, makeSink, signal, request),
      );
    } catch (error) {
      // The deadline's own ECONNABORTED, said as a call that did not answer within the request timeout.
      if (axios.isAxiosError(error)) throw unreachable(error, url, signal);
      throw error;
    }
  }

  /**
   * One call whose 2xx body goes to a new sink from `makeSink` while it arrives (inside the call's slot, like
   * a body read whole, and stopped when the slot ends); any other answer is read as text and classified as
   * `send`'s are.
   */
  async function readRows(
    url: string,
    token: string,
    params: Record<string, string | number> | undefined,
    makeSink: () => ODataSink,
    signal: AbortSignal | undefined,
    abortOn: AbortSignal,
  ): Promise<AxiosResponse<string> | RowsScan> {
    let response: AxiosResponse<Readable>;
    try {
      response = await http.get<Readable>(url, {
        params,
        responseType: 'stream',
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
        signal: abortOn,
      });
    } catch (error) {
      throw unreachable(error, url, signal);
    }
    const path = new URL(url).pathname;
    const scanner = makeSink();
    const ok = response.status >= 200 && response.status < 300;
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of response.data) {
        if (ok) scanner.push(chunk as Buffer);
        else chunks.push(chunk as Buffer);
      }
    } catch (error) {
      if (error instanceof MalformedODataError) throw notJson(path, error);
      throw unreachable(error, url, signal);
    } finally {
      response.data.destroy();
    }
    if (!ok) return { ...response, data: Buffer.concat(chunks).toString('utf8') };
    let rest;
    try {
      rest = await scanner.end();
    } catch (error) {
      throw notJson(path, error as Error);
    }
    if (!rest.hasValue) throw malformed(path, `The Defender API answered ${path} without a "value" array`);
    return { status: 200, members: rest.members };
  }

  /**
   * Runs `call` in one of the shared slots. The call counts against the tenant's quota from when it is sent,
   * as Microsoft counts it, and its waits (`quotaSeconds` before, the slot's here) and outcome go to the metrics.
   * The tenant's health decides, once the slot is held, whether the call may go now; one that may not gives
   * the slot back at once and asks for one again at its turn.
   */
  async function inSlot<T extends { status: number }>(
    endpoint: DefenderEndpointClass,
    claim: QuotaClaim,
    quotaSeconds: number,
    signal: AbortSignal | undefined,
    call: (abortOn: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const queued = performance.now();
    for (;;) {
      await health.turn(signal);
      if (signal?.aborted) {
        health.passTurn();
        throw notSent(endpoint, queued, signal);
      }
      let sentAt = 0;
      let slotEnded: AbortSignal | undefined;
      try {
        const response = await limiter.schedule(async (slotEnds) => {
          // Stopped while it waited: not sent (axios would still write a request whose signal already
          // aborted, one call more in flight than the slots).
          if (signal?.aborted) throw notSent(endpoint, queued, signal);
          if (!health.start()) return NOT_NOW;
          slotEnded = slotEnds;
          sentAt = performance.now();
          claim.sent();
          metrics?.waited(endpoint, quotaSeconds, (sentAt - queued) / 1000);
          const request = requestSignal(signal, slotEnds);
          return call(request.signal).finally(request.done);
        });
        if (response === NOT_NOW) continue;
        const slow = performance.now() - sentAt >= slowFailureMs;
        const outcome = outcomeOf(response.status);
        health.leave(outcome === 'failed' && !slow ? 'neither' : outcome, `answered ${response.status}`);
        metrics?.called(endpoint, response.status, (performance.now() - sentAt) / 1000);
        return response;
      } catch (error) {
        if (sentAt > 0) {
          const failure = failureOf(error, signal, slotEnded);
          const slow = performance.now() - sentAt >= slowFailureMs;
          health.leave(failure !== undefined && slow ? 'failed' : 'neither', failure);
          metrics?.called(endpoint, 'error', (performance.now() - sentAt) / 1000);
        } else {
          if (CallHealth.isHeldBack(error)) metrics?.heldBack(endpoint);
          health.passTurn();
        }
        throw slotExpired(error, endpoint, slotEnded) ?? error;
      }
    }
  }

  /**
   * A call its caller stopped before it was sent: it waited for one of the shared slots (or its tenant's
   * turn) all that time, so at a deadline (the access test's time limit) the API is not to blame.
   */
  function notSent(endpoint: DefenderEndpointClass, queued: number, signal: AbortSignal): DefenderError {
    return new DefenderError(
      DefenderErrorCode.UNAVAILABLE,
      endedAtDeadline(signal)
        ? `A ${endpoint} call to the Defender API of tenant ${azureTenantId} was not sent within the time ` +
            `allowed: it waited ${duration(performance.now() - queued)} for one of the shared call slots, ` +
            'all busy with other calls'
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
    if (slotEnded?.reason instanceof SlotEndedError)
      return `held its call slot ${slotEnded.reason.heldMs} ms`;
    let code: string | undefined;
    if (axios.isAxiosError(error)) code = error.code ?? 'ERROR';
    else if (isDefenderError(error, DefenderErrorCode.UNAVAILABLE))
      code = String(error.details['networkCode'] ?? 'ERROR');
    if (code === undefined) return undefined;
    return TIMED_OUT.has(code) ? `no answer within ${options.requestTimeoutMs / 1000} s` : code;
  }

  /**
   * The call held its slot as long as a job may (its body kept arriving, slowly, for a minute), so it was
   * stopped, or the limiter gave the slot up: a failure of this read, tried again like an outage, in words an
   * operator can act on, not the limiter's own "This job timed out".
   */
  function slotExpired(
    error: unknown,
    endpoint: DefenderEndpointClass,
    slotEnds: AbortSignal | undefined,
  ): DefenderError | undefined {
    let held: string;
    if (slotEnds?.reason instanceof SlotEndedError) held = `${slotEnds.reason.heldMs} ms`;
    else if (error instanceof Bottleneck.BottleneckError && /timed out/.test(error.message))
      held = error.message.replace(/^This job timed out after /, '').replace(/\.$/, '');
    else return undefined;
    return new DefenderError(
      DefenderErrorCode.UNAVAILABLE,
      `A ${endpoint} call to the Defender API of tenant ${azureTenantId} held its call slot as long as the ` +
        `limiter allows (${held}) and was stopped: its answer came too slowly` +
        (endpoint === 'bulk' ? '; a smaller URS_BULK_PAGE_SIZE makes each page shorter' : ''),
      { canRetry: true, cause: error, details: { azureTenantId, endpoint } },
    );
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
      const claim = await quota.acquire(azureTenantId, endpoint, signal);
      const quotaSeconds = (performance.now() - asked) / 1000;
      // The quota's wait can outlast the token (a tenant that spent its hourly quota waits up to an hour):
      // sent expired, it would spend a call of the quota on a 401, and a second expiry would fail the call.
      // So after a wait the token is asked for again (the same one unless it is due for renewal).
      if (quotaSeconds >= TOKEN_RECHECK_AFTER_QUOTA_WAIT_S) token = (await tokens.getToken(signal)).token;
      const current = token;
      const response = await call(current, (run) => inSlot(endpoint, claim, quotaSeconds, signal, run));
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

  /** Retries a call on transient failures and waits out 429s (shared with every process via the quota). */
  async function withRetries<R>(
    endpoint: DefenderEndpointClass,
    url: string,
    signal: AbortSignal | undefined,
    once: () => Promise<R>,
  ): Promise<R> {
    const since = Date.now();
    let failures = 0;
    let throttles = 0;
    let throttledMs = 0;
    for (;;) {
      try {
        // Held back: the call ends before it takes a token, a quota claim or a slot.
        const heldBack = health.heldBack();
        if (heldBack) {
          metrics?.heldBack(endpoint);
          throw heldBack;
        }
        return await once();
      } catch (error) {
        if (signal?.aborted) throw stoppedWith(error, signal, url, since);
        if (!(error instanceof DefenderError) || !error.canRetry) throw error;
        if (CallHealth.isHeldBack(error)) throw error;
        // The tenant's calls failed too often in a row: this one ends too, without waiting to be retried.
        const heldBack = health.heldBack(error);
        if (heldBack) throw heldBack;
        let delayMs: number;
        if (error.code === DefenderErrorCode.THROTTLED) {
          throttles++;
          // At least the backoff: a Retry-After of 0 (or a date already past) would otherwise retry at
          // once, for ever, as the wait never grows.
          delayMs = Math.max(
            error.retryAfterMs ?? 0,
            retryDelayMs(options.retryPolicy, throttles, options.random),
          );
          // Every process holds this tenant's endpoint back, not only this call; also when this call gives
          // up on a wait longer than it may take (an hourly quota's 429 asks for up to an hour): otherwise
          // each of the tenant's other calls would go out and draw a 429 of its own.
          await quota.block(azureTenantId, endpoint, delayMs);
          if (throttledMs + delayMs > options.maxThrottleWaitMs) throw error;
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
        });
        await sleep(delayMs, signal);
        // Stopped while waiting to retry: the call ends with why it was being retried.
        if (signal?.aborted) throw stoppedWith(error, signal, url, since);
      }
    }
  }

  /** One OData call read row by row by `send`, with its retries. */
  async function scan(
    endpoint: DefenderEndpointClass,
    pathOrUrl: string,
    signal: AbortSignal | undefined,
    send: (url: string, token: string, abortOn: AbortSignal) => Promise<AxiosResponse<string> | RowsScan>,
  ): Promise<RowsScan> {
    const url = resolveUrl(pathOrUrl);
    const result = await withRetries(endpoint, url, signal, () =>
      // The answer is read in the slot as it arrives, so the whole call runs in it.
      attempt<RowsScan>(endpoint, url, signal, (token, slot) => slot((abortOn) => send(url, token, abortOn))),
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
  ): Promise<RowsScan> {
    return scan(endpoint, pathOrUrl, signal, (url, token, abortOn) =>
      sendRows(url, token, params, sink, signal, abortOn),
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
    ): Promise<RowsResult<T>> {
      let rows: T[] = [];
      const result = await scan(endpoint, pathOrUrl, signal, (url, token, abortOn) => {
        // A retried call starts its rows afresh.
        rows = [];
        const sink = (): ODataSink => new ODataRowScanner<T>((row) => rows.push(row), toRow, reader);
        // Its rows are kept whole (a page of the device list): the page must arrive within the timeout.
        return sendRows(url, token, params, sink, signal, abortOn, options.requestTimeoutMs);
      });
      return result.status === 404 ? result : { status: 200, rows, members: result.members };
    },
    scanRows(endpoint, pathOrUrl, params, onRow, toRow, signal, reader) {
      const sink = (): ODataSink => new ODataRowScanner(onRow, toRow, reader);
      return scanInto(endpoint, pathOrUrl, params, sink, signal);
    },
    scanInto,
  };
}
