import type { IncomingHttpHeaders } from 'node:http';

export type HttpMethod = 'GET' | 'PUT' | 'POST' | 'DELETE';

/** A request as a route handler sees it: authenticated, body read and parsed (JSON), path parameters decoded. */
export interface ApiRequest {
  method: HttpMethod;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  /** The parsed JSON body; undefined when the request had none. */
  body: unknown;
  headers: IncomingHttpHeaders;
  /**
   * Aborted when the server stops before the request was answered (its share of the stop ran out, see
   * ApiServerOptions.drainTimeoutMs): calls the handler makes to other systems give up on it.
   */
  signal: AbortSignal;
}

export interface ApiResponse {
  status: number;
  /** Serialised as JSON; omitted for 204. */
  body?: unknown;
  headers?: Record<string, string>;
}

export type RouteHandler = (request: ApiRequest) => Promise<ApiResponse>;

/**
 * One entry of the route table. `path` segments starting with `:` are parameters
 * (`/v1/tenants/:tenantId/defender`). Each resource's file exports its routes; main.ts concatenates
 * the tables, so adding a resource touches no other resource's file.
 */
export interface Route {
  method: HttpMethod;
  path: string;
  handler: RouteHandler;
}

export interface Violation {
  field: string;
  rule: string;
}

/** An answer that is an error: `{error: {code, message, violations?}}` with this status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly violations: Violation[] = [],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  toBody(): { error: { code: string; message: string; violations?: Violation[] } } {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.violations.length > 0 ? { violations: this.violations } : {}),
      },
    };
  }
}

export type RouteMatch =
  | { kind: 'found'; route: Route; params: Record<string, string> }
  /** The route's path, with a parameter that is not valid percent-encoded UTF-8 (`%E0%A4%A`): a bad request. */
  | { kind: 'undecodable'; parameter: string }
  /** `allow` lists HEAD wherever GET is (RFC 9110: HEAD is GET without the body). */
  | { kind: 'method-not-allowed'; allow: string[] }
  | { kind: 'not-found' };

interface CompiledRoute {
  route: Route;
  segments: string[];
}

function split(path: string): string[] {
  return path.split('/').filter((segment) => segment.length > 0);
}

/**
 * Matches a path against the table: the route, or why not (no such path, not with this method, or a parameter
 * that does not decode). HEAD matches the GET route of its path.
 */
export function createRouter(routes: readonly Route[]): (method: string, path: string) => RouteMatch {
  const compiled: CompiledRoute[] = routes.map((route) => ({ route, segments: split(route.path) }));
  for (const [index, entry] of compiled.entries()) {
    const duplicate = compiled.findIndex(
      (other) => other.route.method === entry.route.method && other.route.path === entry.route.path,
    );
    if (duplicate !== index)
      throw new Error(`route ${entry.route.method} ${entry.route.path} is registered twice`);
  }
  return (method, path) => {
    const parts = split(path);
    const allow: string[] = [];
    for (const { route, segments } of compiled) {
      const matched = matchSegments(segments, parts);
      if (!matched) continue;
      if (route.method === method || (method === 'HEAD' && route.method === 'GET')) {
        if (matched.undecodable !== undefined) return { kind: 'undecodable', parameter: matched.undecodable };
        return { kind: 'found', route, params: matched.params };
      }
      allow.push(route.method);
      if (route.method === 'GET') allow.push('HEAD');
    }
    return allow.length > 0 ? { kind: 'method-not-allowed', allow } : { kind: 'not-found' };
  };
}

/**
 * A path's parts against a route's segments: undefined when a literal differs or the count does; else the
 * decoded parameters, and the first parameter that is not valid percent-encoding (the path is the route's,
 * the request bad).
 */
function matchSegments(
  segments: string[],
  parts: string[],
): { params: Record<string, string>; undecodable?: string } | undefined {
  if (segments.length !== parts.length) return undefined;
  const params: Record<string, string> = {};
  let undecodable: string | undefined;
  for (const [index, segment] of segments.entries()) {
    const part = parts[index] as string;
    if (!segment.startsWith(':')) {
      if (segment !== part) return undefined;
      continue;
    }
    try {
      params[segment.slice(1)] = decodeURIComponent(part);
    } catch {
      undecodable ??= segment.slice(1);
    }
  }
  return undecodable === undefined ? { params } : { params, undecodable };
}
