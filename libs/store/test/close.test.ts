import { type AddressInfo, type Server, type Socket, createServer } from 'node:net';
import { closeRedis, createRedis } from '../src';

// closeRedis against a server of the test's own that speaks just enough of Redis's protocol (the ready
// check's INFO, PING, QUIT): unit tests run without Redis, and the connection can be dropped at will.

interface FakeRedis {
  url: string;
  /** The commands received, lower case, in order. */
  commands: string[];
  /** Drops every connection and refuses new ones, as a Redis that went away. */
  drop: () => Promise<void>;
  close: () => Promise<void>;
}

async function fakeRedis(): Promise<FakeRedis> {
  const commands: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.on('data', (data) => {
      // Each command is an array of bulk strings: its name is the first one.
      for (const request of data.toString().split(/(?=\*\d+\r\n)/)) {
        const name = request.split('\r\n')[2]?.toLowerCase();
        if (!name) continue;
        commands.push(name);
        if (name === 'info') {
          const info = '# Server\r\nloading:0\r\n';
          socket.write(`$${info.length}\r\n${info}\r\n`);
        } else if (name === 'ping') socket.write('+PONG\r\n');
        else if (name === 'quit') socket.end('+OK\r\n');
        else socket.write('-ERR unknown command\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const stop = (): Promise<void> =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
  return { url: `redis://127.0.0.1:${port}`, commands, drop: stop, close: async () => void (await stop()) };
}

const realSetTimeout = global.setTimeout;

/**
 * The timers `run` starts that keep the process alive once it resolves, with their delays, in
 * milliseconds: how long they can hold a process (or a test run) that has nothing else left to do.
 */
async function timersLeftBy(run: () => Promise<void>): Promise<number[]> {
  const started: { delay: number; timer: NodeJS.Timeout }[] = [];
  const setTimeoutSpy = jest.spyOn(global, 'setTimeout');
  setTimeoutSpy.mockImplementation(((callback: () => void, delay?: number) => {
    const timer = realSetTimeout(callback, delay);
    started.push({ delay: delay ?? 0, timer });
    return timer;
  }) as typeof setTimeout);
  try {
    await run();
  } finally {
    setTimeoutSpy.mockRestore();
  }
  return started.filter(({ timer }) => timer.hasRef()).map(({ delay }) => delay);
}

async function until(check: () => boolean, what: string): Promise<void> {
  const giveUpAt = Date.now() + 5_000;
  while (!check()) {
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => realSetTimeout(resolve, 5));
  }
}

describe('closeRedis', () => {
  let server: FakeRedis;

  beforeEach(async () => {
    server = await fakeRedis();
  });

  afterEach(async () => {
    await server.close();
  });

  it('should QUIT a healthy connection, and end the client', async () => {
    const redis = createRedis({ url: server.url });
    await expect(redis.ping()).resolves.toBe('PONG');
    await closeRedis(redis);
    expect(server.commands).toContain('quit');
    await until(() => redis.status === 'end', 'the client to end');
  });

  it('should close a client whose connection dropped without a timer that holds the process for seconds', async () => {
    const redis = createRedis({ url: server.url });
    redis.on('error', () => undefined);
    await expect(redis.ping()).resolves.toBe('PONG');
    await server.drop();
    await until(() => redis.status === 'reconnecting', 'the client to see its connection dropped');
    const delays = await timersLeftBy(() => closeRedis(redis));
    expect(delays.length).toBeGreaterThan(0);
    // ioredis's own disconnect waits `disconnectTimeout` for the socket to close, and one already closed
    // never does: the timer runs out whole.
    expect(Math.max(...delays)).toBeLessThanOrEqual(200);
  });
});
