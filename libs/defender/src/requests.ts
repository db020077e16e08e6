import type { Agent } from 'node:https';
import type { Readable } from 'node:stream';
import axios, {
  AxiosError,
  type AxiosAdapter,
  type AxiosResponse,
  type InternalAxiosRequestConfig,
} from 'axios';
import {
  type CallOf,
  malformed as malformedAnswer,
  notJson as notJsonAnswer,
  unreachable as unreachableCall,
} from './answers';
import { DefenderError, DefenderErrorCode } from './errors';
import { MalformedODataError, type ODataSink } from './odata-rows';

// The HTTP side of the API caller (http.ts): a tenant's requests to its API host, their bodies read whole or
// row by row, and what a request that got no answer means. When a request may go (token, quota, slot,
// retries) is the caller's.

/** An OData answer whose rows were handed out one by one: the other top-level members. */
export type RowsScan = { status: 200; members: Record<string, unknown> } | { status: 404 };

/**
 * Runs one call in one of the shared slots (the caller's `inSlot`, bound to its endpoint, quota claim and
 * signal). The call sends its request with `abortOn`: aborted by the caller's signal or by the slot's end.
 * `wholeSlot`: the call has no deadline of its own and may run until the slot ends (see ScheduleOptions).
 */
export type Slot = <T extends { status: number }>(
  call: (abortOn: AbortSignal) => Promise<T>,
  wholeSlot?: boolean,
) => Promise<T>;

/**
 * Runs a request with `abortOn`, for at most `ms`: one that runs out of time fails as axios's own timeout
 * does (ECONNABORTED), whether its answer never began or keeps trickling in. axios's `timeout` alone is a
 * silence timeout: a body that sends a byte now and then is never stopped by it.
 */
export async function withinDeadline<T>(
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

export interface RequestsOptions {
  azureTenantId: string;
  /** MDE API base URL, no trailing slash. */
  apiBase: string;
  httpsAgent: Agent;
  /** See ApiCallerOptions.requestTimeoutMs. */
  requestTimeoutMs: number;
}

export interface Requests {
  /** A path under the API base, or an `@odata.nextLink`, as a URL on the tenant's own API host. */
  resolveUrl(pathOrUrl: string): string;
  /** One GET whose body is read whole, its HTTP exchange in `slot`. */
  send(
    url: string,
    token: string,
    params: Record<string, string | number> | undefined,
    slot: Slot,
    signal?: AbortSignal,
  ): Promise<AxiosResponse<string>>;
  /** One GET whose 2xx body goes to a sink from `makeSink` as it arrives (see sendRows below). */
  sendRows(
    url: string,
    token: string,
    params: Record<string, string | number> | undefined,
    makeSink: () => ODataSink,
    signal: AbortSignal | undefined,
    abortOn: AbortSignal,
    deadlineMs?: number,
  ): Promise<AxiosResponse<string> | RowsScan>;
  /** An answer the caller found wrong as a whole, MALFORMED_RESPONSE. */
  malformed(path: string, message: string): DefenderError;
}

export function createRequests(options: RequestsOptions): Requests {
  const { azureTenantId, apiBase } = options;
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
    /** What the sink's push failed with: the sink's own failure, passed on as it is (as at its end below). */
    let sinkFailure: { error: unknown } | undefined;
    const push = async (chunk: Buffer): Promise<void> => {
      try {
        const behind = scanner.push(chunk);
        if (behind) await behind;
      } catch (error) {
        sinkFailure = { error };
        throw error;
      }
    };
    try {
      for await (const chunk of response.data) {
        if (!ok) chunks.push(chunk as Buffer);
        else await push(chunk as Buffer);
      }
    } catch (error) {
      if (error instanceof MalformedODataError) throw notJson(path, error);
      // The sink's reader gone midway (a fold thread at its heap limit): the answer is read no further,
      // and its failure is not one of the call's, to be retried.
      if (sinkFailure !== undefined && error === sinkFailure.error) throw error;
      throw unreachable(error, url, signal);
    } finally {
      response.data.destroy();
    }
    if (!ok) return { ...response, data: Buffer.concat(chunks).toString('utf8') };
    let rest;
    try {
      rest = await scanner.end();
    } catch (error) {
      // Any other failure is the sink's own (its reader gone: a fold thread at its heap limit), not a body
      // Microsoft got wrong: asked again, the page would only fail again, and count against the tenant's calls.
      if (error instanceof MalformedODataError) throw notJson(path, error);
      throw error;
    }
    if (!rest.hasValue) throw malformed(path, `The Defender API answered ${path} without a "value" array`);
    return { status: 200, members: rest.members };
  }

  return { resolveUrl, send, sendRows, malformed };
}
