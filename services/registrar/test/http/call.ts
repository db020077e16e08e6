import {
  ApiError,
  createRouter,
  type ApiRequest,
  type ApiResponse,
  type HttpMethod,
  type Route,
} from '../../src/http/router';

/**
 * Answers requests through `routes` as the server would, without HTTP or authentication: the path's
 * query becomes `request.query`, and an `ApiError` becomes its status and JSON body. `signal` is the
 * request's (never aborted unless given).
 */
export function routeCaller(
  routes: readonly Route[],
): (method: HttpMethod, path: string, body?: unknown, signal?: AbortSignal) => Promise<ApiResponse> {
  const match = createRouter(routes);
  return async (method, path, body, signal = new AbortController().signal) => {
    const url = new URL(path, 'http://localhost');
    const found = match(method, url.pathname);
    if (found.kind !== 'found') throw new Error(`no route ${method} ${path}`);
    const request: ApiRequest = {
      method,
      path: url.pathname,
      params: found.params,
      query: url.searchParams,
      body,
      headers: {},
      signal,
    };
    try {
      return await found.route.handler(request);
    } catch (error) {
      if (error instanceof ApiError) return { status: error.status, body: error.toBody() };
      throw error;
    }
  };
}
