import { Agent, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { silentLogger } from '@urs/logging';
import type { Route } from '../../src/http/router';
import { startApiServer, type ApiServer } from '../../src/http/server';

const TOKEN = 'test-token-0123456789abcdef';

interface Answer {
  status?: number;
  body?: { error?: { code: string; message: string } };
  headers?: Record<string, string | string[] | undefined>;
  /** The error code when the connection was cut instead of answered. */
  error?: string;
}

/** Sends a GET and settles with its answer, or with the error code when the connection is cut. */
function send(port: number, path: string, agent?: Agent): Promise<Answer> {
  return sendWith(port, 'GET', path, agent);
}

/** Sends a request and settles with its answer, or with the error code when the connection is cut. */
function sendWith(port: number, method: string, path: string, agent?: Agent): Promise<Answer> {
  return new Promise((resolve) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method,
        headers: { authorization: `Bearer ${TOKEN}` },
        ...(agent ? { agent } : {}),
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            ...(text ? { body: JSON.parse(text) as Answer['body'] } : {}),
          }),
        );
      },
    );
    req.on('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? 'error' }));
    req.end();
  });
}

/** Settles with `promise`, or with 'late' when it took longer than `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | 'late'> {
  return Promise.race([
    promise,
    new Promise<'late'>((resolve) => setTimeout(() => resolve('late'), ms).unref()),
  ]);
}

async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setTimeout(resolve, 5));
}

/**
 * From here on the test's clock: timers are fake, moved by `pass`, so that how long the close waits is told by
 * them and not by the machine's speed. The sockets' I/O stays real.
 */
function fakeClock(): {
  pass(ms: number): Promise<void>;
  passUntil(check: () => boolean, maxMs: number): Promise<void>;
} {
  jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
  // A step of the clock, with a turn of the event loop before it for the I/O under way.
  const step = async (): Promise<void> => {
    await new Promise((resolve) => setImmediate(resolve));
    await jest.advanceTimersByTimeAsync(10);
  };
  return {
    async pass(ms) {
      for (let moved = 0; moved < ms; moved += 10) await step();
    },
    async passUntil(check, maxMs) {
      for (let moved = 0; !check() && moved < maxMs; moved += 10) await step();
    },
  };
}

describe('startApiServer: stopping', () => {
  let server: ApiServer | undefined;
  /** Signals of the requests the slow route received, in order. */
  let slow: AbortSignal[];
  /** Resolves the slow route's requests that are still waiting. */
  let release: (() => void)[];

  const routes: Route[] = [
    {
      method: 'GET',
      path: '/v1/slow',
      // Waits until the test releases it, or until its signal aborts (a call that gives up on a stop).
      handler: (request) =>
        new Promise((resolve, reject) => {
          slow.push(request.signal);
          release.push(() => resolve({ status: 200, body: { done: true } }));
          request.signal.addEventListener('abort', () => reject(request.signal.reason));
        }),
    },
    { method: 'GET', path: '/v1/fast', handler: async () => ({ status: 200, body: { done: true } }) },
    {
      method: 'PUT',
      path: '/v1/write',
      // A write already under way when the stop cuts its request (a Kafka send, then Redis): it does not
      // listen to its signal, and takes `writeMs`, or until the test releases it (`writeMs` null).
      handler: async (request) => {
        writes.push('started');
        writeSignals.push(request.signal);
        await new Promise<void>((resolve) => {
          if (writeMs === null) release.push(resolve);
          else setTimeout(resolve, writeMs);
        });
        writes.push('done');
        return { status: 200, body: { done: true } };
      },
    },
  ];
  /** What the write route did, in order. */
  let writes: string[];
  /** Signals of the requests the write route received, in order. */
  let writeSignals: AbortSignal[];
  /** How long the write route's write takes, ms; null: until the test releases it. */
  let writeMs: number | null;

  const start = async (drainTimeoutMs: number): Promise<ApiServer> => {
    slow = [];
    release = [];
    writes = [];
    writeSignals = [];
    writeMs = 0;
    server = await startApiServer({
      port: 0,
      host: '127.0.0.1',
      routes,
      tokens: [TOKEN],
      maxBodyBytes: 1024,
      logger: silentLogger,
      drainTimeoutMs,
    });
    return server;
  };

  afterEach(async () => {
    jest.useRealTimers();
    for (const resolve of release) resolve();
    await server?.close();
    server = undefined;
  });

  it('close should let a request in flight finish within drainTimeoutMs, and resolve once it did', async () => {
    // A drain time longer than the test may take: a close that waited it out instead of resolving once the
    // request finished never resolves here.
    const api = await start(60_000);
    const answer = send(api.port, '/v1/slow');
    await until(() => slow.length === 1);
    const closed = api.close();
    setTimeout(() => release[0]?.(), 100);
    expect(await answer).toMatchObject({ status: 200, body: { done: true } });
    expect(await within(closed, 10_000)).toBeUndefined();
    expect(slow[0]?.aborted).toBe(false);
  });

  it('close should answer a request still in flight after drainTimeoutMs 503, abort its signal and resolve', async () => {
    const api = await start(300);
    const answer = send(api.port, '/v1/slow');
    await until(() => slow.length === 1);
    const clock = fakeClock();
    let closed = false;
    void api.close().then(() => (closed = true));
    // The request is given its drain time first...
    await clock.pass(290);
    expect(slow[0]?.aborted).toBe(false);
    // ...then cut. The slow route returns only once released or aborted: a close that waited for it never resolves.
    await clock.pass(10);
    expect(slow[0]?.aborted).toBe(true);
    await clock.passUntil(() => closed, 10_000);
    expect(closed).toBe(true);
    const answered = await answer;
    expect(answered).toMatchObject({ status: 503, body: { error: { code: 'SHUTTING_DOWN' } } });
    expect(answered.headers?.['retry-after']).toBe('5');
  });

  it('close should wait for a request it cut to settle before it resolves, so its write is never left half done', async () => {
    const api = await start(300);
    // Past the drain time, within the time close() then gives a cut handler to settle.
    writeMs = 450;
    const answer = sendWith(api.port, 'PUT', '/v1/write');
    await until(() => writes.length === 1);
    await api.close();
    // The publisher and Redis close once close() resolved: the write got to finish before them.
    expect(writes).toEqual(['started', 'done']);
    expect(await within(answer, 1_000)).toMatchObject({
      status: 503,
      body: { error: { code: 'SHUTTING_DOWN' } },
    });
  });

  it('close should wait for a request it cut at most drainTimeoutMs more', async () => {
    const api = await start(200);
    // A write that finishes only once released (after the close): a close that waited for it never resolves.
    writeMs = null;
    const answer = sendWith(api.port, 'PUT', '/v1/write');
    await until(() => writes.length === 1);
    const clock = fakeClock();
    let closed = false;
    void api.close().then(() => (closed = true));
    // Both waits run: the drain time, the request cut at its end...
    await clock.pass(190);
    expect(writeSignals[0]?.aborted).toBe(false);
    await clock.pass(10);
    expect(writeSignals[0]?.aborted).toBe(true);
    // ...then as long again for the cut handler, before the close ends.
    await clock.pass(190);
    expect(closed).toBe(false);
    await clock.passUntil(() => closed, 10_000);
    // The request was cut (its signal aborted, answered 503), and close resolved with its handler pending.
    expect(closed).toBe(true);
    expect(writes).toEqual(['started']);
    expect(await answer).toMatchObject({ status: 503, body: { error: { code: 'SHUTTING_DOWN' } } });
  });

  it('close should end idle keep-alive connections at once, while a request in flight still drains', async () => {
    const api = await start(60_000);
    const agent = new Agent({ keepAlive: true });
    try {
      expect(await send(api.port, '/v1/fast', agent)).toMatchObject({ status: 200 });
      await until(() => Object.values(agent.freeSockets).flat().length === 1);
      const [idle] = Object.values(agent.freeSockets).flat();
      const ended = new Promise<void>((resolve) => idle?.once('close', () => resolve()));
      // A request in flight holds the close in its drain: only ending idle connections at once can end this one
      // before the request is released; otherwise the server's keep-alive timeout would, 5 s after its answer.
      const answer = send(api.port, '/v1/slow');
      await until(() => slow.length === 1);
      const closed = api.close();
      expect(await within(ended, 4_000)).toBeUndefined();
      release[0]?.();
      expect(await answer).toMatchObject({ status: 200 });
      await closed;
    } finally {
      agent.destroy();
    }
  });

  it('a request that arrives while the server stops should be answered 503 SHUTTING_DOWN, not left waiting', async () => {
    const api = await start(2_000);
    // A connection whose request is still arriving when the stop begins: the server is busy with it, so the
    // stop does not end it as idle, and its request is complete only once the stop began.
    const socket = connect({ host: '127.0.0.1', port: api.port });
    let raw = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (raw += chunk));
    const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write('GET /v1/fast HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const closed = api.close();
    socket.write(`Authorization: Bearer ${TOKEN}\r\n\r\n`);
    expect(await within(ended, 3_000)).toBeUndefined();
    expect(await within(closed, 3_000)).toBeUndefined();
    const [head = '', body = ''] = raw.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 503 /);
    expect(head.toLowerCase()).toContain('connection: close');
    expect(JSON.parse(body)).toEqual({
      error: { code: 'SHUTTING_DOWN', message: expect.stringMatching(/stopping/) },
    });
  });
});
