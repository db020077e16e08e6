import { type Server, type Socket, createConnection, createServer } from 'node:net';
import type Redis from 'ioredis';
import { Registry } from '@urs/telemetry';
import { closeRedis, createRedis } from '@urs/store';
import {
  type LogLine,
  type TestRedis,
  capturingLogger,
  createTestRedis,
  testInfra,
  waitFor,
} from '@urs/testkit';
import { type CallLimiter, createSharedLimiter } from '../src';

/**
 * A TCP proxy to the test Redis that, once, lets through the command carrying `marker` and then cuts the
 * connection before its reply comes back: Redis ran the command, the client never heard.
 */
async function startReplyCuttingProxy(
  marker: string,
): Promise<{ url: string; cut: () => boolean; close(): Promise<void> }> {
  const target = new URL(testInfra().redisUrl);
  const sockets = new Set<Socket>();
  let armed = true;
  let cut = false;
  const server: Server = createServer((downstream) => {
    const upstream = createConnection(Number(target.port || 6379), target.hostname);
    for (const socket of [downstream, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    let cutting = false;
    downstream.on('data', (chunk) => {
      if (armed && chunk.toString('latin1').includes(marker)) {
        armed = false;
        cutting = true;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (!cutting) return void downstream.write(chunk);
      cut = true;
      upstream.destroy();
      downstream.destroy();
    });
    downstream.on('close', () => upstream.destroy());
    upstream.on('close', () => downstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `redis://127.0.0.1:${port}`,
    cut: () => cut,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

let testRedis: TestRedis;
let redis: Redis | undefined;
let limiter: CallLimiter | undefined;
let lines: LogLine[];

beforeEach(() => {
  testRedis = createTestRedis();
  lines = [];
});

afterEach(async () => {
  await limiter?.close();
  limiter = undefined;
  if (redis) await closeRedis(redis);
  redis = undefined;
  await testRedis.close();
});

const key = (name: string): string => `b_${testRedis.prefix}defender-api_${name}`;

/** A shared limiter of 3 slots reconciling every 100 ms, its gauges in `registry`, after its first call. */
async function reconcilingLimiter(registry: Registry): Promise<void> {
  redis = createRedis({ url: testInfra().redisUrl });
  limiter = await createSharedLimiter({
    redis,
    keyPrefix: testRedis.prefix,
    maxConcurrent: 3,
    reconcileEveryMs: 100,
    metrics: registry,
    logger: capturingLogger(lines),
  });
  await limiter.schedule(async () => undefined);
}

describe('createSharedLimiter when a script ran in Redis but its reply was lost', () => {
  it('a register is not sent again on the new connection: the call runs and its slot comes back with the job expiration', async () => {
    // Only a register carries the job expiration; this one is the test's own.
    const jobExpirationMs = 1_537;
    const proxy = await startReplyCuttingProxy(`\r\n${jobExpirationMs}\r\n`);
    try {
      redis = createRedis({ url: proxy.url });
      redis.on('error', () => undefined);
      limiter = await createSharedLimiter({
        redis,
        keyPrefix: testRedis.prefix,
        maxConcurrent: 2,
        jobExpirationMs,
        reconcileEveryMs: 3_600_000,
        logger: capturingLogger(lines),
      });
      await expect(limiter.schedule(async () => 'ran')).resolves.toBe('ran');
      expect(proxy.cut()).toBe(true);
      // Sent again, the register would have counted the job twice and its free given back one: a slot lost.
      await waitFor(async () => (await testRedis.client.hget(key('settings'), 'running')) === '0', {
        timeoutMs: 10_000,
        description: 'the shared running count back at 0',
      });
    } finally {
      await limiter?.close();
      limiter = undefined;
      await proxy.close();
    }
  }, 30_000);
});

describe('createSharedLimiter reconciling the shared running count', () => {
  it('should give back a slot a register run twice kept, log it, and let maxConcurrent calls run at once again', async () => {
    const registry = new Registry();
    await reconcilingLimiter(registry);
    const [clientId] = await testRedis.client.zrange(key('client_running'), 0, -1);
    // What a register sent twice leaves: its weight counted twice, the job recorded once.
    await testRedis.client
      .multi()
      .hincrby(key('settings'), 'running', 1)
      .zincrby(key('client_running'), 1, clientId!)
      .exec();

    await waitFor(async () => (await testRedis.client.hget(key('settings'), 'running')) === '0', {
      timeoutMs: 5_000,
      description: 'the shared running count given back',
    });
    expect(await testRedis.client.zscore(key('client_running'), clientId!)).toBe('0');
    expect(lines).toContainEqual(
      expect.objectContaining({ level: 'warn', message: expect.stringContaining('gave back'), slots: 1 }),
    );

    let running = 0;
    let peak = 0;
    const job = async (): Promise<void> => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((resolve) => setTimeout(resolve, 200));
      running--;
    };
    await Promise.all(Array.from({ length: 6 }, () => limiter!.schedule(job)));
    expect(peak).toBe(3);
    await waitFor(() => registry.expose().includes('urs_defender_slots_running 0\n'), {
      description: 'the running gauge at 0',
    });
    expect(registry.expose()).toContain('urs_defender_slots_max 3\n');
  }, 30_000);
});

describe('createSharedLimiter serving the shared slots as gauges', () => {
  it('should serve no value while the shared count cannot be read, not the last one it read', async () => {
    const registry = new Registry({ processMetrics: false });
    await reconcilingLimiter(registry);
    await waitFor(() => registry.expose().includes('urs_defender_slots_max 3\n'), {
      description: 'the gauges served',
    });
    // The shared count's key no longer a hash: every reconcile fails, as it does while Redis is away.
    await testRedis.client.multi().del(key('settings')).set(key('settings'), 'not a hash').exec();
    await waitFor(() => !/^urs_defender_slots_(running|max) /m.test(registry.expose()), {
      timeoutMs: 5_000,
      description: 'the gauges no longer served',
    });
    // Read again, they are served again.
    await testRedis.client.del(key('settings'));
    await testRedis.client.hset(key('settings'), 'running', '0', 'maxConcurrent', '3');
    await waitFor(() => registry.expose().includes('urs_defender_slots_max 3\n'), {
      timeoutMs: 5_000,
      description: 'the gauges served again',
    });
    expect(registry.expose()).toContain('urs_defender_slots_running 0\n');
    // The limiter's keys gone (a Redis flushed): nothing to read the count from until Bottleneck writes them.
    await testRedis.client.del(key('settings'));
    await waitFor(() => !/^urs_defender_slots_(running|max) /m.test(registry.expose()), {
      timeoutMs: 5_000,
      description: 'the gauges no longer served while the keys are gone',
    });
  }, 30_000);
});

describe('createSharedLimiter and the stored maxConcurrent', () => {
  it('a limiter with another maxConcurrent should write it and warn naming the old and the new value', async () => {
    redis = createRedis({ url: testInfra().redisUrl });
    const first = await createSharedLimiter({
      redis,
      keyPrefix: testRedis.prefix,
      maxConcurrent: 20,
      logger: capturingLogger(lines),
    });
    await first.close();
    expect(lines.filter((line) => line.level === 'warn')).toEqual([]);
    limiter = await createSharedLimiter({
      redis,
      keyPrefix: testRedis.prefix,
      maxConcurrent: 12,
      logger: capturingLogger(lines),
    });
    expect(await testRedis.client.hget(key('settings'), 'maxConcurrent')).toBe('12');
    expect(lines).toContainEqual(expect.objectContaining({ level: 'warn', previous: 20, maxConcurrent: 12 }));
  });

  it('a limiter joining the stored settings should leave them as they are', async () => {
    redis = createRedis({ url: testInfra().redisUrl });
    const first = await createSharedLimiter({
      redis,
      keyPrefix: testRedis.prefix,
      maxConcurrent: 20,
      logger: capturingLogger(lines),
    });
    await first.close();
    limiter = await createSharedLimiter({
      redis,
      keyPrefix: testRedis.prefix,
      maxConcurrent: 10,
      joinStoredSettings: true,
      logger: capturingLogger(lines),
    });
    expect(await testRedis.client.hget(key('settings'), 'maxConcurrent')).toBe('20');
  });
});
