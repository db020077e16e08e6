import { applyKafkaJsFixes } from '@urs/bus';
import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { waitFor } from '@urs/testkit';
import { keepMemberIdAcrossRestarts, type ConsumerGroupLike } from '../src/kafkajs-fixes';

// KafkaJS's per-connection request queue, as its connections use it.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const RequestQueue = require('kafkajs/src/network/requestQueue/index.js') as new (options: object) => {
  pending: unknown[];
  inflight: Map<number, unknown>;
  throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  push(request: object): void;
  maybeThrottle(ms: number): void;
  checkPendingRequests(): void;
  scheduleCheckPendingRequests(): void;
  destroy(): void;
};

const logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

function queue() {
  return new RequestQueue({
    maxInFlightRequests: 1,
    requestTimeout: 30_000,
    enforceRequestTimeout: false,
    clientId: 'test',
    broker: 'broker:9092',
    logger,
  });
}

function request(correlationId: number, sendRequest: () => void) {
  return {
    entry: { correlationId, apiKey: 1, apiName: 'Fetch', apiVersion: 11 },
    expectResponse: true,
    sendRequest,
  };
}

beforeAll(() => {
  expect(applyKafkaJsFixes()).toEqual({
    requestQueue: true,
    memberIds: true,
    connections: true,
    crc32c: expect.any(Boolean),
    recordBatches: expect.any(Boolean),
  });
});

afterEach(() => jest.useRealTimers());

describe('applyKafkaJsFixes', () => {
  it('should leave an idle connection without a timer (KafkaJS 2.2.4 looped every millisecond)', () => {
    const idle = queue();
    idle.scheduleCheckPendingRequests();
    expect(idle.throttleCheckTimeoutId).toBeNull();
    idle.checkPendingRequests();
    expect(idle.throttleCheckTimeoutId).toBeNull();
    idle.destroy();
  });

  it('should still send a request that waited for the broker throttle once the throttle ends', () => {
    jest.useFakeTimers({ now: 1_000_000 });
    const throttled = queue();
    throttled.maybeThrottle(50);
    const sent = jest.fn();
    throttled.push(request(1, sent));
    expect(sent).not.toHaveBeenCalled();
    expect(throttled.pending).toHaveLength(1);
    jest.advanceTimersByTime(49);
    expect(sent).not.toHaveBeenCalled();
    jest.advanceTimersByTime(1);
    expect(sent).toHaveBeenCalledTimes(1);
    expect(throttled.pending).toHaveLength(0);
    expect(throttled.throttleCheckTimeoutId).toBeNull();
    throttled.destroy();
  });

  it('should look again after 10 ms at a request waiting behind the in-flight limit', () => {
    jest.useFakeTimers({ now: 1_000_000 });
    const busy = queue();
    const first = jest.fn();
    const second = jest.fn();
    busy.push(request(1, first));
    busy.push(request(2, second));
    expect(first).toHaveBeenCalledTimes(1);
    expect(second).not.toHaveBeenCalled();
    // The first answer arrives (as fulfillRequest would record it): the next look sends the second.
    busy.inflight.delete(1);
    jest.advanceTimersByTime(10);
    expect(second).toHaveBeenCalledTimes(1);
    busy.destroy();
  });
});

describe('keepMemberIdAcrossRestarts', () => {
  /** KafkaJS's ConsumerGroup as far as the fix sees it: each join answers `joins`' next id, or fails after it. */
  function fakeConsumerGroup(joins: { id: string; fails?: boolean }[]): {
    new (emitter: object): ConsumerGroupLike;
    joinedWith: (string | null)[];
  } {
    const joinedWith: (string | null)[] = [];
    class FakeConsumerGroup implements ConsumerGroupLike {
      memberId: string | null = null;
      constructor(readonly instrumentationEmitter: object) {}
      async joinAndSync(): Promise<void> {
        joinedWith.push(this.memberId);
        const next = joins.shift();
        if (!next) throw new Error('no join expected');
        // JoinGroup answered the id; SyncGroup may still fail.
        this.memberId = next.id;
        if (next.fails) throw new Error('The coordinator is not available');
      }
      async leave(): Promise<void> {
        this.memberId = null;
      }
    }
    keepMemberIdAcrossRestarts(FakeConsumerGroup);
    return Object.assign(FakeConsumerGroup, { joinedWith });
  }

  it('should rejoin a restarted consumer with the member id its last join was given, also when that join failed after it', async () => {
    const Group = fakeConsumerGroup([{ id: 'a1' }, { id: 'a2', fails: true }, { id: 'a2' }, { id: 'b1' }]);
    const emitter = {};
    await new Group(emitter).joinAndSync();
    // Restarted after a crash: a new membership of the same consumer; its join fails after JoinGroup gave a2.
    await expect(new Group(emitter).joinAndSync()).rejects.toThrow('coordinator');
    await new Group(emitter).joinAndSync();
    // A member that left its group starts afresh.
    const left = new Group(emitter);
    await left.leave();
    await new Group(emitter).joinAndSync();
    expect(Group.joinedWith).toEqual([null, 'a1', 'a2', null]);
  });
});

describe('dropConnectionOnRequestTimeout', () => {
  // KafkaJS's connection to one broker, patched by applyKafkaJsFixes (beforeAll).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Connection = require('kafkajs/src/network/connection.js') as new (options: object) => {
    connect(): Promise<boolean>;
    send(request: object): Promise<unknown>;
    isConnected(): boolean;
    disconnect(): Promise<boolean>;
  };
  // An ApiVersions request as KafkaJS makes it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const apiVersions = require('kafkajs/src/protocol/requests/apiVersions') as {
    protocol(options: { version: number }): () => object;
  };
  const kafkaLogger = { ...logger, namespace: () => kafkaLogger };
  /** What the silent broker's side shows within 2 s, looked at every 10 ms. */
  const SOON = { timeoutMs: 2_000, intervalMs: 10 };

  /** A broker that takes connections and never answers (a host gone, its connections not closed). */
  async function silentBroker(): Promise<{ server: Server; accepted: Socket[]; closed: () => number }> {
    const accepted: Socket[] = [];
    let closed = 0;
    const server = createServer((socket) => {
      accepted.push(socket);
      socket.resume();
      socket.on('close', () => closed++);
      socket.on('error', () => undefined);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return { server, accepted, closed: () => closed };
  }

  /** A KafkaJS connection to `broker`, its requests timing out after `requestTimeout` ms. */
  function connectionTo(broker: { server: Server }, requestTimeout: number, logging: object = kafkaLogger) {
    return new Connection({
      host: '127.0.0.1',
      port: (broker.server.address() as AddressInfo).port,
      logger: logging,
      socketFactory: ({ host, port, onConnect }: { host: string; port: number; onConnect: () => void }) =>
        connect({ host, port }, onConnect),
      requestTimeout,
      connectionTimeout: 1_000,
    });
  }

  it('should close a connection whose request timed out, and connect afresh for the next one', async () => {
    const broker = await silentBroker();
    const connection = connectionTo(broker, 200);
    try {
      await connection.connect();
      await expect(connection.send(apiVersions.protocol({ version: 0 })())).rejects.toMatchObject({
        name: 'KafkaJSRequestTimeoutError',
      });
      // KafkaJS 2.2.4 left it open: the broker's side never closed, and the next request went the same way.
      await waitFor(() => broker.closed() === 1, SOON);
      expect(connection.isConnected()).toBe(false);
      await connection.connect();
      expect(broker.accepted).toHaveLength(2);
    } finally {
      await connection.disconnect();
      for (const socket of broker.accepted) socket.destroy();
      broker.server.close();
    }
  });

  it('should leave to a disconnect the connection it ended while waiting for the request that timed out', async () => {
    const broker = await silentBroker();
    const errors: string[] = [];
    const logging = { ...kafkaLogger, error: (message: string) => void errors.push(message) };
    const connection = connectionTo(broker, 200, { ...logging, namespace: () => logging });
    try {
      await connection.connect();
      const sending = connection.send(apiVersions.protocol({ version: 0 })());
      sending.catch(() => undefined);
      await waitFor(() => broker.accepted.length === 1 && broker.accepted[0]!.bytesRead > 0, SOON);
      // A disconnect waits for the request in flight, then ends the socket itself.
      const disconnecting = connection.disconnect();
      await expect(sending).rejects.toMatchObject({ name: 'KafkaJSRequestTimeoutError' });
      await disconnecting;
      await waitFor(() => broker.closed() === 1, SOON);
      // Not destroyed again with an error: KafkaJS would log a connection error and disconnect a second time.
      expect(errors).toEqual([]);
    } finally {
      for (const socket of broker.accepted) socket.destroy();
      broker.server.close();
    }
  });

  it('should leave a connection open when its request failed otherwise', async () => {
    const broker = await silentBroker();
    const connection = connectionTo(broker, 30_000);
    try {
      await connection.connect();
      const failing = { request: { encode: () => Promise.reject(new Error('cannot encode')) }, response: {} };
      await expect(connection.send(failing)).rejects.toThrow('cannot encode');
      expect(connection.isConnected()).toBe(true);
      expect(broker.closed()).toBe(0);
    } finally {
      await connection.disconnect();
      for (const socket of broker.accepted) socket.destroy();
      broker.server.close();
    }
  });
});
