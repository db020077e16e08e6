import { silentLogger } from '@urs/logging';
import { UrsError } from '@urs/resilience';
import { ApiError, type Route } from '../../src/http/router';
import { startApiServer, type ApiServer } from '../../src/http/server';
import { TenantLockLostError } from '../../src/tenant-lock';

const TOKEN = 'test-token-0123456789abcdef';

describe('startApiServer', () => {
  let server: ApiServer;
  let base: string;
  const seen: unknown[] = [];
  const routes: Route[] = [
    {
      method: 'PUT',
      path: '/v1/things/:id',
      handler: async (request) => {
        seen.push(request.body);
        return { status: 200, body: { id: request.params['id'], body: request.body } };
      },
    },
    {
      method: 'GET',
      path: '/v1/things/:id',
      handler: async (request) => {
        if (request.params['id'] === 'missing') throw new ApiError(404, 'THING_NOT_FOUND', 'no such thing');
        if (request.params['id'] === 'flaky')
          throw new UrsError('REDIS_DOWN', 'connect ECONNREFUSED', { canRetry: true });
        if (request.params['id'] === 'broken') throw new UrsError('BUG', 'internal detail with a value');
        if (request.params['id'] === 'type-error')
          throw new TypeError("Cannot read properties of undefined (reading 'defender')");
        if (request.params['id'] === 'corrupt')
          return JSON.parse('{"clientSecret": "internal detail') as never;
        if (request.params['id'] === 'redis-closed') throw new Error('Connection is closed.');
        if (request.params['id'] === 'busy')
          throw new UrsError('TENANT_BUSY', 'tenant busy is being written by another request; try again', {
            canRetry: true,
          });
        if (request.params['id'] === 'lock-lost')
          throw new UrsError(
            'TENANT_LOCK_LOST',
            'the write lock of tenant x lapsed before its write was done; try again',
            {
              canRetry: true,
            },
          );
        if (request.params['id'] === 'lock-lost-sent')
          throw new TenantLockLostError('x', undefined, 'urs.tenants');
        // Text from elsewhere (a tenant's status note, a stored refusal) that quotes a secret.
        if (request.params['id'] === 'quoting')
          return {
            status: 200,
            body: { note: 'token request sent client_secret=Sup3r-s3cret&grant_type=client_credentials' },
          };
        if (request.params['id'] === 'refused')
          throw new ApiError(
            404,
            'THING_NOT_FOUND',
            'refused: the call sent Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2ln',
          );
        return { status: 200, body: { id: request.params['id'] } };
      },
    },
    { method: 'DELETE', path: '/v1/things/:id', handler: async () => ({ status: 204 }) },
  ];

  beforeAll(async () => {
    server = await startApiServer({
      port: 0,
      host: '127.0.0.1',
      routes,
      tokens: [TOKEN],
      maxBodyBytes: 1024,
      logger: silentLogger,
    });
    base = `http://127.0.0.1:${server.port}`;
  });
  afterAll(async () => {
    await server.close();
  });

  const request = async (
    method: string,
    path: string,
    init: { body?: string; headers?: Record<string, string>; token?: string | null } = {},
  ) => {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: {
        ...(init.token === null ? {} : { authorization: `Bearer ${init.token ?? TOKEN}` }),
        ...init.headers,
      },
      ...(init.body === undefined ? {} : { body: init.body }),
    });
    const text = await response.text();
    return {
      status: response.status,
      headers: response.headers,
      text,
      body: text ? JSON.parse(text) : undefined,
    };
  };

  it('startApiServer should answer 401 without a valid bearer token, before routing', async () => {
    const missing = await request('GET', '/v1/things/a', { token: null });
    expect(missing.status).toBe(401);
    expect(missing.headers.get('www-authenticate')).toBe('Bearer');
    expect(missing.body.error.code).toBe('UNAUTHORIZED');
    expect((await request('GET', '/nowhere', { token: 'wrong-token-0123456789' })).status).toBe(401);
  });

  it('startApiServer should answer without a secret that text in the answer quotes, an error too', async () => {
    const quoting = await request('GET', '/v1/things/quoting');
    expect(quoting.status).toBe(200);
    expect(quoting.body).toEqual({
      note: 'token request sent client_secret=[redacted]&grant_type=client_credentials',
    });
    const refused = await request('GET', '/v1/things/refused');
    expect(refused.status).toBe(404);
    expect(refused.body.error.message).toBe('refused: the call sent Authorization: Bearer [redacted]');
  });

  it('startApiServer should route, parse JSON bodies and answer JSON', async () => {
    const put = await request('PUT', '/v1/things/a', {
      body: '{"x":1}',
      headers: { 'content-type': 'application/json; charset=utf-8' },
    });
    expect(put.status).toBe(200);
    expect(put.headers.get('content-type')).toMatch(/^application\/json/);
    expect(put.body).toEqual({ id: 'a', body: { x: 1 } });
    const del = await request('DELETE', '/v1/things/a');
    expect(del.status).toBe(204);
    expect(del.text).toBe('');
  });

  it('startApiServer should answer 404 and 405 as JSON errors', async () => {
    expect((await request('GET', '/v1/nothing')).body.error.code).toBe('NOT_FOUND');
    const post = await request('POST', '/v1/things/a');
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('PUT, GET, HEAD, DELETE');
    expect(post.body.error.code).toBe('METHOD_NOT_ALLOWED');
    expect(await request('GET', '/v1/things/missing')).toMatchObject({
      status: 404,
      body: { error: { code: 'THING_NOT_FOUND' } },
    });
  });

  it('startApiServer should answer HEAD wherever GET is, with its status and headers and no body', async () => {
    const get = await request('GET', '/v1/things/a');
    const head = await request('HEAD', '/v1/things/a');
    expect(head).toMatchObject({ status: 200, text: '' });
    for (const name of ['content-type', 'content-length', 'cache-control'])
      expect(head.headers.get(name)).toBe(get.headers.get(name));
    expect(await request('HEAD', '/v1/things/missing')).toMatchObject({ status: 404, text: '' });
    expect((await request('HEAD', '/v1/nothing')).status).toBe(404);
  });

  it('startApiServer should answer 400 naming a path parameter that is not valid percent-encoding', async () => {
    const answer = await request('GET', '/v1/things/%E0%A4%A');
    expect(answer).toMatchObject({
      status: 400,
      body: {
        error: {
          code: 'VALIDATION_FAILED',
          message: 'the id in the path is not valid',
          violations: [{ field: 'id', rule: 'must be percent-encoded UTF-8 (%C3%A9 for é)' }],
        },
      },
    });
  });

  it('startApiServer should refuse a body over the limit with 413', async () => {
    const big = JSON.stringify({ pad: 'x'.repeat(2_000) });
    const answer = await request('PUT', '/v1/things/a', {
      body: big,
      headers: { 'content-type': 'application/json' },
    });
    expect(answer.status).toBe(413);
    expect(answer.body.error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('startApiServer should refuse a body that is not JSON by media type (415) or by content (400), without echoing it', async () => {
    const text = await request('PUT', '/v1/things/a', {
      body: 'clientSecret=abc',
      headers: { 'content-type': 'text/plain' },
    });
    expect(text.status).toBe(415);
    expect(text.body.error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    const broken = await request('PUT', '/v1/things/a', {
      body: '{"clientSecret": "Sup3r~secret-value", oops}',
      headers: { 'content-type': 'application/json' },
    });
    expect(broken.status).toBe(400);
    expect(broken.body.error.code).toBe('INVALID_JSON');
    expect(broken.text).not.toContain('Sup3r');
  });

  it('startApiServer should answer a tenant another writer held too long 503 TENANT_BUSY saying so, not as a bus or store away', async () => {
    const busy = await request('GET', '/v1/things/busy');
    expect(busy.status).toBe(503);
    expect(busy.headers.get('retry-after')).toBe('5');
    expect(busy.body).toEqual({
      error: {
        code: 'TENANT_BUSY',
        message: 'tenant busy is being written by another request; try again',
      },
    });
  });

  it('startApiServer should answer a write whose tenant lock was lost 503 TENANT_LOCK_LOST saying so', async () => {
    const lost = await request('GET', '/v1/things/lock-lost');
    expect(lost.status).toBe(503);
    expect(lost.headers.get('retry-after')).toBe('5');
    expect(lost.body).toEqual({
      error: {
        code: 'TENANT_LOCK_LOST',
        message: 'the write lock of tenant x lapsed before its write was done; try again',
      },
    });
    // Lost once its record was on urs.tenants: the answer says the change may be in force.
    const sent = await request('GET', '/v1/things/lock-lost-sent');
    expect(sent.status).toBe(503);
    expect(sent.headers.get('retry-after')).toBe('5');
    expect(sent.body).toEqual({
      error: {
        code: 'TENANT_LOCK_LOST',
        message:
          'the write lock of tenant x lapsed before its write was done, its record already sent to urs.tenants, ' +
          'where it cannot be recalled: the change may have been applied; read the tenant back before trying again',
      },
    });
  });

  it('startApiServer should hide unexpected failures behind 503 (retryable) or 500', async () => {
    const flaky = await request('GET', '/v1/things/flaky');
    expect(flaky.status).toBe(503);
    expect(flaky.headers.get('retry-after')).toBe('5');
    expect(flaky.body.error.code).toBe('UNAVAILABLE');
    const broken = await request('GET', '/v1/things/broken');
    expect(broken.status).toBe(500);
    expect(broken.text).not.toContain('internal detail');
  });

  it('startApiServer should answer a foreign error 500, and 503 only when it is a fault of Redis or Kafka', async () => {
    for (const id of ['type-error', 'corrupt']) {
      const answer = await request('GET', `/v1/things/${id}`);
      expect(answer.status).toBe(500);
      expect(answer.headers.get('retry-after')).toBeNull();
      expect(answer.body.error.code).toBe('INTERNAL');
      expect(answer.text).not.toContain('internal detail');
    }
    const closed = await request('GET', '/v1/things/redis-closed');
    expect(closed.status).toBe(503);
    expect(closed.body.error.code).toBe('UNAVAILABLE');
  });
});

describe('startApiServer: listening', () => {
  it('startApiServer should answer on IPv4 and IPv6 loopback alike when given no host, so an IPv6 pod is reachable', async () => {
    const server = await startApiServer({
      port: 0,
      routes: [
        { method: 'GET', path: '/v1/ping', handler: async () => ({ status: 200, body: { ok: true } }) },
      ],
      tokens: [TOKEN],
      maxBodyBytes: 1024,
      logger: silentLogger,
    });
    try {
      for (const host of ['127.0.0.1', '[::1]']) {
        const answer = await fetch(`http://${host}:${server.port}/v1/ping`, {
          headers: { authorization: `Bearer ${TOKEN}` },
        });
        expect({ host, status: answer.status, body: await answer.json() }).toEqual({
          host,
          status: 200,
          body: { ok: true },
        });
      }
    } finally {
      await server.close();
    }
  });
});
