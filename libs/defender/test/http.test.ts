import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { silentLogger } from '@urs/logging';
import { retryPolicy } from '@urs/resilience';
import { capturingLogger, type LogLine } from '@urs/testkit';
import {
  createApiCaller,
  createHttpsAgent,
  createLocalLimiter,
  createLocalQuotaGate,
  DefenderErrorCode,
  environmentHasProxy,
  parseRetryAfterMs,
  type ApiCallerOptions,
} from '../src';

describe('parseRetryAfterMs', () => {
  it('parseRetryAfterMs should read seconds', () => {
    expect(parseRetryAfterMs('12')).toBe(12_000);
    expect(parseRetryAfterMs('0.5')).toBe(500);
  });

  it('parseRetryAfterMs should read an HTTP date relative to now', () => {
    const now = Date.parse('2024-01-01T00:00:00Z');
    expect(parseRetryAfterMs('Mon, 01 Jan 2024 00:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfterMs('Sun, 31 Dec 2023 23:59:00 GMT', now)).toBe(0);
  });

  it("parseRetryAfterMs should wait at most an hour, Microsoft's longest quota window, in whole milliseconds", () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    // A date 74 years away, a thousand days, and seconds whose milliseconds Redis would not take as an integer.
    for (const header of ['Fri, 01 Jan 2100 00:00:00 GMT', '86400000', '1e18'])
      expect([header, parseRetryAfterMs(header, now)]).toEqual([header, 3_600_000]);
    expect(parseRetryAfterMs('3600', now)).toBe(3_600_000);
    expect(parseRetryAfterMs('59.9991', now)).toBe(60_000);
  });

  it('parseRetryAfterMs should give undefined for a missing or unreadable header', () => {
    expect(parseRetryAfterMs(undefined)).toBeUndefined();
    expect(parseRetryAfterMs('')).toBeUndefined();
    expect(parseRetryAfterMs('soon')).toBeUndefined();
  });
});

describe('environmentHasProxy', () => {
  it('environmentHasProxy should see a proxy axios would use, in either case, and nothing else', () => {
    expect(environmentHasProxy({})).toBe(false);
    expect(environmentHasProxy({ NO_PROXY: '*', HTTPS_PROXY: '' })).toBe(false);
    expect(environmentHasProxy({ HTTPS_PROXY: 'http://proxy:3128' })).toBe(true);
    expect(environmentHasProxy({ https_proxy: 'http://proxy:3128' })).toBe(true);
    expect(environmentHasProxy({ http_proxy: 'proxy:3128' })).toBe(true);
    expect(environmentHasProxy({ ALL_PROXY: 'socks5://proxy:1080' })).toBe(true);
  });
});

/** An API caller of tenant `t1` at `apiBase`: a token that never expires, three attempts, no throttle wait. */
function callerAt(apiBase: string, overrides: Partial<ApiCallerOptions> = {}) {
  return createApiCaller({
    azureTenantId: 't1',
    clientId: 'app',
    apiBase,
    tokens: {
      getToken: async () => ({ token: 'x', expiresOnTimestamp: Date.now() + 3_600_000 }),
      refreshToken: async () => ({ token: 'x', expiresOnTimestamp: Date.now() + 3_600_000 }),
    },
    limiter: createLocalLimiter(),
    quota: createLocalQuotaGate(),
    httpsAgent: createHttpsAgent(),
    retryPolicy: retryPolicy({ maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 100 }),
    requestTimeoutMs: 2_000,
    maxThrottleWaitMs: 0,
    logger: silentLogger,
    ...overrides,
  });
}

describe('createApiCaller', () => {
  it('should follow next links under the path of an API base that has one', async () => {
    const asked: string[] = [];
    const server = createServer((req, res) => {
      asked.push(req.url ?? '');
      const next =
        asked.length === 1 ? 'https://api.securitycenter.microsoft.com/api/machines/x?page=2' : undefined;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ value: [{ n: asked.length }], ...(next ? { '@odata.nextLink': next } : {}) }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const api = callerAt(`http://127.0.0.1:${port}/mde`, { retryPolicy: retryPolicy({ maxAttempts: 1 }) });
    try {
      const first = await api.get('machines', '/api/machines/x');
      const next = (first as { body: Record<string, string> }).body['@odata.nextLink'] as string;
      await api.get('machines', next);
      // A link that already carries the base's path is followed as it is.
      await api.get('machines', 'https://api.securitycenter.microsoft.com/mde/api/machines/x?page=3');
      expect(asked).toEqual([
        '/mde/api/machines/x',
        '/mde/api/machines/x?page=2',
        '/mde/api/machines/x?page=3',
      ]);
    } finally {
      server.close();
    }
  });

  it('should fail a call at once, and the next one before it is sent, when a 429 asks for longer than they may wait', async () => {
    let calls = 0;
    const server = createServer((_req, res) => {
      calls++;
      res.writeHead(429, { 'Retry-After': '3600', 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'TooManyRequests', message: 'Rate limit is exceeded' } }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const lines: LogLine[] = [];
    // Limits past the test's own timeout (30 s), far below the hour asked for: a call that waited up to them
    // before failing would not end within it.
    const api = callerAt(`http://127.0.0.1:${port}`, {
      maxThrottleWaitMs: 60_000,
      maxQuotaWaitMs: 60_000,
      logger: capturingLogger(lines),
    });
    try {
      await expect(api.get('machines', '/api/machines')).rejects.toMatchObject({
        code: DefenderErrorCode.THROTTLED,
        retryAfterMs: 3_600_000,
      });
      // The 429 blocked the tenant's machines calls for the hour: the next call is not sent, and says how long.
      const next = await api.get('machines', '/api/machines').catch((error: unknown) => error);
      expect(next).toMatchObject({ code: DefenderErrorCode.THROTTLED });
      expect((next as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(3_590_000);
      // Neither waited to be retried (a call logs that before its wait).
      expect(lines.filter((line) => line.message === 'defender: retrying a call')).toEqual([]);
      expect(calls).toBe(1);
    } finally {
      server.close();
    }
  });

  it('should give up a call answered 429 with Retry-After 0 every time, its waits growing with the backoff', async () => {
    let calls = 0;
    const server = createServer((_req, res) => {
      calls++;
      res.writeHead(429, { 'Retry-After': '0', 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'TooManyRequests', message: 'Rate limit is exceeded' } }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const generous = [{ limit: 10_000, windowMs: 60_000 }];
    const api = callerAt(`http://127.0.0.1:${port}`, {
      quota: createLocalQuotaGate({
        limits: { machines: generous, vulnerabilities: generous, bulk: generous, exportFiles: generous },
      }),
      maxThrottleWaitMs: 500,
      // The top of each backoff's full jitter, so the count below does not depend on the draw.
      random: () => 0.99,
    });
    try {
      await expect(api.get('machines', '/api/machines')).rejects.toMatchObject({
        code: DefenderErrorCode.THROTTLED,
      });
      // Waits of 9, 19, 39, 79, 99, 99, … ms until the 500 ms budget is spent.
      // The 8th wait would pass the budget: 8 calls in all.
      expect(calls).toBe(8);
    } finally {
      server.close();
    }
  });
});
