import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type Logger, redact } from '@urs/logging';
import { errorCode, errorMessage, isInfrastructureFault, isUrsError } from '@urs/resilience';
import { listenHttp, type Registry } from '@urs/telemetry';
import { isTenantContention } from '../tenant-lock';
import { createBearerCheck } from './auth';
import { ApiError, createRouter, type ApiResponse, type HttpMethod, type Route } from './router';

export interface ApiServerOptions {
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Interface to bind. Default: every interface, IPv6 and IPv4 alike (see `listenHttp`). */
  host?: string;
  routes: readonly Route[];
  /** Accepted bearer tokens. */
  tokens: readonly string[];
  /** Largest accepted body, in bytes (larger: 413). */
  maxBodyBytes: number;
  logger: Logger;
  metrics?: Registry;
  /**
   * How long requests in flight may take to finish once close() is called, in milliseconds. Default 5000.
   * Those still unanswered then are answered 503 SHUTTING_DOWN and their `signal` aborted, so that an access
   * test waiting on Microsoft (up to URS_ACCESS_TEST_TIMEOUT_MS) cannot hold the stop past
   * URS_SHUTDOWN_TIMEOUT_MS. Their handlers then get as long again to settle (see close()). main.ts gives
   * it the runtime's `drainTimeoutMs`, a third of that timeout.
   */
  drainTimeoutMs?: number;
}

export interface ApiServer {
  readonly port: number;
  /**
   * Stops the server: it accepts no connection from then on, ends idle keep-alive connections at once and
   * answers any request that still arrives 503 SHUTTING_DOWN; requests in flight get `drainTimeoutMs` to
   * finish. Those still in flight then are answered 503 and their signal aborted, and their handlers get up
   * to `drainTimeoutMs` more to settle: a write already under way (Kafka, then Redis) finishes before the
   * caller closes the publisher and Redis under it, rather than reach Kafka and not Redis. Resolves once
   * every connection is closed, within twice `drainTimeoutMs` plus at most a second. Idempotent.
   */
  close(): Promise<void>;
}

/**
 * How long a connection may stay open once the stop answered its request, ms: an answer sent with
 * `connection: close` ends its socket once written, but a client that does not read it would keep it open.
 */
const CLOSE_GRACE_MS = 1_000;

/** A request whose handler has not returned yet. */
interface InFlight {
  request: IncomingMessage;
  response: ServerResponse;
  /** When it arrived, ms since the epoch. */
  started: number;
  /** Aborts the request's `signal`. */
  stop: AbortController;
  /** Whether an answer was sent (by the handler, or by the stop in its place). */
  answered: boolean;
}

const METHODS = new Set<string>(['GET', 'HEAD', 'PUT', 'POST', 'DELETE']);

/**
 * Writes the answer; to a HEAD request, the headers a GET would get, without the body (RFC 9110 9.3.2). The
 * body goes out redacted (`redact`, as log lines do): text from elsewhere in it (a tenant's status note, a stored
 * refusal, Microsoft's error in an access check's verdict, an error's message) may quote a secret.
 */
function send(response: ServerResponse, answer: ApiResponse, head: boolean): void {
  const headers: Record<string, string> = { 'cache-control': 'no-store', ...answer.headers };
  if (answer.status === 204 || answer.body === undefined) {
    response.writeHead(answer.status, headers).end();
    return;
  }
  const text = JSON.stringify(redact(answer.body));
  response.writeHead(answer.status, {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
  });
  if (head) response.end();
  else response.end(text);
}

/** Reads the body up to `limit` bytes; a larger one is refused with 413 before it is all received. */
function readBody(request: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(request.headers['content-length'] ?? '0');
  if (declared > limit) {
    return Promise.reject(new ApiError(413, 'PAYLOAD_TOO_LARGE', `the body must be at most ${limit} bytes`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        request.removeAllListeners('data');
        request.resume();
        reject(new ApiError(413, 'PAYLOAD_TOO_LARGE', `the body must be at most ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => resolve(Buffer.concat(chunks)));
    request.on('error', reject);
  });
}

function parseJson(raw: Buffer, contentType: string | undefined): unknown {
  if (raw.length === 0) return undefined;
  const mediaType = (contentType ?? '').split(';')[0]?.trim().toLowerCase();
  if (mediaType !== 'application/json') {
    throw new ApiError(
      415,
      'UNSUPPORTED_MEDIA_TYPE',
      'the body must be JSON, sent with Content-Type: application/json',
    );
  }
  try {
    return JSON.parse(raw.toString('utf8')) as unknown;
  } catch {
    // The parser's own message quotes the input, which may hold a secret: say only what is wrong.
    throw new ApiError(400, 'INVALID_JSON', 'the body is not valid JSON');
  }
}

/**
 * Whether a failure is answered 503 (retry shortly): Redis or Kafka away (`isInfrastructureFault`, or a KafkaJS
 * error the publisher gave up on after its tries), or one of the project's own retryable errors. A foreign
 * error (a TypeError, a corrupt stored hash's SyntaxError) is a defect a retry meets again: 500.
 */
function isUnavailable(error: unknown): boolean {
  if (isUrsError(error)) return error.canRetry;
  return isInfrastructureFault(error) || (error instanceof Error && error.name.startsWith('KafkaJS'));
}

/**
 * The REST server: node `http`, a route table, bearer-token auth on every route, JSON bodies up to a
 * size limit, JSON errors `{error: {code, message, violations}}`. Unexpected failures answer 500 (or 503
 * when retrying may help) with a generic message: their text is logged, never returned.
 */
export async function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  const route = createRouter(options.routes);
  const authorized = createBearerCheck(options.tokens);
  const log = options.logger.child({ component: 'http' });
  const requests = options.metrics?.counter(
    'urs_http_requests_total',
    'REST requests, by method and status.',
  );

  async function answer(request: IncomingMessage, signal: AbortSignal): Promise<ApiResponse> {
    const url = new URL(request.url ?? '/', 'http://localhost');
    if (!authorized(request.headers.authorization)) {
      throw new ApiError(
        401,
        'UNAUTHORIZED',
        'a valid bearer token is required (Authorization: Bearer <token>)',
        [],
        {
          'www-authenticate': 'Bearer',
        },
      );
    }
    const method = (request.method ?? 'GET').toUpperCase();
    const match = route(method, url.pathname);
    if (match.kind === 'not-found') throw new ApiError(404, 'NOT_FOUND', `no resource at ${url.pathname}`);
    if (match.kind === 'undecodable') {
      throw new ApiError(400, 'VALIDATION_FAILED', `the ${match.parameter} in the path is not valid`, [
        { field: match.parameter, rule: 'must be percent-encoded UTF-8 (%C3%A9 for é)' },
      ]);
    }
    if (match.kind === 'method-not-allowed' || !METHODS.has(method)) {
      const allow = match.kind === 'method-not-allowed' ? match.allow.join(', ') : '';
      throw new ApiError(405, 'METHOD_NOT_ALLOWED', `${method} is not allowed here (allowed: ${allow})`, [], {
        allow,
      });
    }
    const body = parseJson(await readBody(request, options.maxBodyBytes), request.headers['content-type']);
    return match.route.handler({
      // HEAD is answered as GET; `send` leaves the body out.
      method: method === 'HEAD' ? 'GET' : (method as HttpMethod),
      path: url.pathname,
      params: match.params,
      query: url.searchParams,
      body,
      headers: request.headers,
      signal,
    });
  }

  const inFlight = new Set<InFlight>();
  /** Called when the last request in flight is done (its handler settled), while close() waits for them. */
  let onDrained: (() => void) | undefined;
  let stopping = false;

  /** Sends `result`, counts and logs it; while stopping, with `connection: close` so its socket ends after it. */
  function finish(
    request: IncomingMessage,
    response: ServerResponse,
    result: ApiResponse,
    started: number,
  ): void {
    if (result.status === 413 || stopping) result.headers = { ...result.headers, connection: 'close' };
    send(response, result, request.method === 'HEAD');
    const path = (request.url ?? '/').split('?')[0];
    requests?.inc({ method: request.method ?? '?', status: String(result.status) });
    log.info('request', {
      method: request.method,
      path,
      status: result.status,
      ms: Date.now() - started,
    });
  }

  /** The answer to a request the stop leaves no time for: it may be retried, against this or another replica. */
  function shuttingDown(message: string): ApiResponse {
    return {
      status: 503,
      body: { error: { code: 'SHUTTING_DOWN', message } },
      headers: { 'retry-after': '5' },
    };
  }

  const server: Server = createServer((request, response) => {
    const started = Date.now();
    // A request completed after the stop began (it was still arriving, or on a connection that was busy).
    if (stopping) {
      finish(
        request,
        response,
        shuttingDown('the service is stopping and takes no new requests; retry shortly'),
        started,
      );
      return;
    }
    const entry: InFlight = { request, response, started, stop: new AbortController(), answered: false };
    inFlight.add(entry);
    answer(request, entry.stop.signal)
      .catch((error: unknown): ApiResponse => {
        if (error instanceof ApiError)
          return { status: error.status, body: error.toBody(), headers: error.headers };
        // Another writer of the tenant held it past the lock's wait, or took it while the write ran (its lock
        // lost, the write stopped before its next step): the service is fine, the tenant is not free.
        if (isTenantContention(error))
          return {
            status: 503,
            body: { error: { code: errorCode(error), message: errorMessage(error) } },
            headers: { 'retry-after': '5' },
          };
        const retryable = isUnavailable(error);
        log.error('request failed', {
          method: request.method,
          code: errorCode(error),
          reason: errorMessage(error),
        });
        return retryable
          ? {
              status: 503,
              body: {
                error: {
                  code: 'UNAVAILABLE',
                  message: 'the service could not reach its bus or store; retry shortly',
                },
              },
              headers: { 'retry-after': '5' },
            }
          : {
              status: 500,
              body: { error: { code: 'INTERNAL', message: 'the request failed unexpectedly' } },
            };
      })
      .then((result) => {
        // The stop answered it already: what the handler made of its aborted calls is not sent.
        if (entry.answered) return;
        entry.answered = true;
        finish(request, response, result, started);
      })
      .catch((error: unknown) => {
        log.error('answer failed', { reason: errorMessage(error) });
        response.destroy();
      })
      .finally(() => {
        inFlight.delete(entry);
        if (inFlight.size === 0) onDrained?.();
      });
  });
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  server.keepAliveTimeout = 5_000;
  const drainTimeoutMs = options.drainTimeoutMs ?? 5_000;
  // The listener's own close ends idle keep-alive connections at once and lets busy ones finish: the waits
  // below bound how long they may take.
  const listening = await listenHttp(server, {
    port: options.port,
    host: options.host,
    closeConnections: 'idle',
  });

  /** Answers the requests still in flight 503 and aborts their calls; a request half answered is cut. */
  function cutInFlight(): void {
    if (inFlight.size === 0) return;
    log.warn('stopping: requests still in flight after the drain time, answering 503', {
      requests: inFlight.size,
      drainTimeoutMs,
    });
    for (const entry of inFlight) {
      entry.stop.abort(new Error('the server is stopping'));
      if (entry.answered) continue;
      entry.answered = true;
      if (entry.response.headersSent) {
        entry.response.destroy();
        continue;
      }
      finish(
        entry.request,
        entry.response,
        shuttingDown(
          'the service stopped before the request finished; it may or may not have taken effect: retry it',
        ),
        entry.started,
      );
    }
  }

  /** Resolves once no request is in flight (every handler settled), or after `ms`; false then. */
  async function drained(ms: number): Promise<boolean> {
    if (inFlight.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const settled = await new Promise<boolean>((resolve) => {
      onDrained = () => resolve(true);
      timer = setTimeout(() => resolve(false), ms);
    });
    clearTimeout(timer);
    onDrained = undefined;
    return settled;
  }

  let closing: Promise<void> | undefined;
  async function close(): Promise<void> {
    stopping = true;
    const closed = listening.close();
    if (!(await drained(drainTimeoutMs))) {
      cutInFlight();
      // A cut handler may be in the middle of a write (a slow Kafka send, then Redis): the caller closes the
      // publisher and Redis once this resolves, so it is given the time to finish it (a handler that is not
      // writing yet gives up at its signal: a registry write does not start once it aborted).
      if (!(await drained(drainTimeoutMs))) {
        log.warn('stopping: handlers of cut requests still running after the drain time', {
          requests: inFlight.size,
          drainTimeoutMs,
        });
      }
    }
    // What is still open now holds an answer sent with `connection: close` (or was idle by then): a short
    // wait for clients to read it, then every connection left is ended.
    const grace = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
    // A connection whose request was answered before the stop may have turned idle since.
    server.closeIdleConnections();
    await closed;
    clearTimeout(grace);
  }

  return {
    port: listening.port,
    close() {
      closing ??= close();
      return closing;
    },
  };
}
