import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '@urs/logging';
import { canRetry, errorCode, errorMessage } from '@urs/resilience';
import { listenHttp, type Registry } from '@urs/telemetry';
import { createBearerCheck } from './auth';
import { ApiError, createRouter, type ApiResponse, type HttpMethod, type Route } from './router';

export interface ApiServerOptions {
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Interface to bind. Default `0.0.0.0`. */
  host?: string;
  routes: readonly Route[];
  /** Accepted bearer tokens. */
  tokens: readonly string[];
  /** Largest accepted body, in bytes (larger: 413). */
  maxBodyBytes: number;
  logger: Logger;
  metrics?: Registry;
}

export interface ApiServer {
  readonly port: number;
  close(): Promise<void>;
}

const METHODS = new Set<string>(['GET', 'HEAD', 'PUT', 'POST', 'DELETE']);

/** Writes the answer; to a HEAD request, the headers a GET would get, without the body (RFC 9110 9.3.2). */
function send(response: ServerResponse, answer: ApiResponse, head: boolean): void {
  const headers: Record<string, string> = { 'cache-control': 'no-store', ...answer.headers };
  if (answer.status === 204 || answer.body === undefined) {
    response.writeHead(answer.status, headers).end();
    return;
  }
  const text = JSON.stringify(answer.body);
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

  async function answer(request: IncomingMessage): Promise<ApiResponse> {
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
    });
  }

  const server: Server = createServer((request, response) => {
    const started = Date.now();
    answer(request)
      .catch((error: unknown): ApiResponse => {
        if (error instanceof ApiError)
          return { status: error.status, body: error.toBody(), headers: error.headers };
        const retryable = canRetry(error);
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
        if (result.status === 413) result.headers = { ...result.headers, connection: 'close' };
        send(response, result, request.method === 'HEAD');
        const path = (request.url ?? '/').split('?')[0];
        requests?.inc({ method: request.method ?? '?', status: String(result.status) });
        log.info('request', {
          method: request.method,
          path,
          status: result.status,
          ms: Date.now() - started,
        });
      })
      .catch((error: unknown) => {
        log.error('answer failed', { reason: errorMessage(error) });
        response.destroy();
      });
  });
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  server.keepAliveTimeout = 5_000;
  // Requests in flight at a stop still get their answer; only idle keep-alive connections end at once.
  return listenHttp(server, { port: options.port, host: options.host, closeConnections: 'idle' });
}
