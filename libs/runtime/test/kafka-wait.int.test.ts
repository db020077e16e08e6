import { connect, createServer, type Server, type Socket } from 'node:net';
import { Kafka } from 'kafkajs';
import type { ConsumerRunner, RunnerState } from '@urs/bus';
import { OUTAGE_RETRY } from '@urs/resilience';
import { startService } from '@urs/runtime';
import { capturingLogger, createTestKafka, uniqueId, waitFor, type LogLine } from '@urs/testkit';
import { serviceBasics, startWith } from '../src/service';
import { deleteTopicsOf, freePort, serviceEnv } from './support';

/** /readyz's JSON once it answers 503, undefined while nothing listens. */
async function notReady(port: number): Promise<unknown> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2_000) });
    return response.status === 503 ? await response.json() : undefined;
  } catch {
    return undefined;
  }
}

/** A broker address that takes each connection and drops it at once, counting them. */
async function droppingBroker(): Promise<{ server: Server; port: number; connections: () => number }> {
  let connections = 0;
  const server = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { server, port, connections: () => connections };
}

/**
 * An address in front of the test broker: it forwards each connection while `forwarding`, and once told to
 * stop, drops each new one at once, counting those.
 */
async function switchingProxy(target: string) {
  const [host, port] = target.split(':') as [string, string];
  let forwarding = true;
  let dropped = 0;
  const open = new Set<Socket>();
  const server = createServer((socket) => {
    if (!forwarding) {
      dropped++;
      socket.destroy();
      return;
    }
    const upstream = connect(Number(port), host);
    for (const end of [socket, upstream]) {
      open.add(end);
      end.on('close', () => open.delete(end));
      end.on('error', () => undefined);
    }
    socket.pipe(upstream).pipe(socket);
  });
  const listenPort = await freePort();
  await new Promise<void>((resolve) => server.listen(listenPort, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${listenPort}`,
    drop: () => void (forwarding = false),
    dropped: () => dropped,
    close: async () => {
      for (const socket of open) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** KafkaJS giving up on a broker away. */
const kafkaAway = (): Error =>
  Object.assign(new Error('Connection error: connect ECONNREFUSED 127.0.0.1:9092'), {
    name: 'KafkaJSConnectionError',
    code: 'ECONNREFUSED',
    retriable: true,
  });

/** A runner whose start fails as with Kafka away while `away` says so; counts its starts. */
function runnerFailingWhile(away: () => boolean): { runner: ConsumerRunner; starts: () => number } {
  let state: RunnerState = 'created';
  let starts = 0;
  const runner: ConsumerRunner = {
    get state() {
      return state;
    },
    get startedOnce() {
      return starts > 0;
    },
    async start() {
      starts++;
      if (away()) throw kafkaAway();
      state = 'running';
    },
    isReady: () => state === 'running',
    failed: () => new Promise<Error>(() => undefined),
    async close() {
      state = 'closed';
    },
  };
  return { runner, starts: () => starts };
}

describe('startService with waitForKafka', () => {
  it('should serve, start nothing that needs Kafka, say /readyz waits for it, fail waiting sends and stop cleanly', async () => {
    const [kafkaPort, metricsPort] = [await freePort(), await freePort()];
    const stop = new AbortController();
    let served = false;
    let started = false;
    let send: Promise<unknown> | undefined;
    const starting = startService({
      name: 'test-service',
      env: {
        ...serviceEnv(`${uniqueId('wait')}.`),
        KAFKA_BROKERS: `127.0.0.1:${kafkaPort}`,
        URS_METRICS_PORT: String(metricsPort),
      },
      waitForKafka: true,
      stop: stop.signal,
      setup: async ({ publisher }) => ({
        // What answers while Kafka is away (a REST API): its writes wait for the publisher.
        serve: async () => {
          served = true;
          send = publisher.sendRaw('nowhere', []);
          send.catch(() => undefined);
        },
        // After the runners, with Kafka (a scheduler, a sweep that publishes).
        start: async () => void (started = true),
      }),
    });
    starting.catch(() => undefined);
    // Once Redis answered and setup ran (the health endpoints answer from the very start).
    const answer = await waitFor(
      async () => {
        const notReadyAnswer = (await notReady(metricsPort)) as { reason?: string } | undefined;
        return notReadyAnswer?.reason?.startsWith('waiting for Kafka') ? notReadyAnswer : undefined;
      },
      { timeoutMs: 15_000 },
    );
    expect(answer).toEqual({ status: 'not-ready', reason: expect.stringContaining('waiting for Kafka') });
    expect(served).toBe(true);
    expect(started).toBe(false);
    stop.abort();
    // The stop ends the wait: the start settles, where a wait going on would try this absent Kafka for ever.
    // The bound is only there to fail rather than hang: six of the wait's longest pauses between tries, far
    // beyond the moments a stop takes.
    const goingOn = new Promise<'still waiting'>((resolve) => {
      const timer = setTimeout(() => resolve('still waiting'), 6 * OUTAGE_RETRY.maxDelayMs);
      starting.finally(() => clearTimeout(timer)).catch(() => undefined);
    });
    expect(await Promise.race([starting.catch((error: unknown) => error), goingOn])).toMatchObject({
      code: 'SERVICE_STOPPED',
      closedCleanly: true,
    });
    expect(started).toBe(false);
    // The send that waited for Kafka fails with the start instead of hanging: with the wait's last failure to
    // reach this Kafka, or with the stop, when it came during a connect.
    await expect(send).rejects.toThrow(
      new RegExp(`ECONNREFUSED 127\\.0\\.0\\.1:${kafkaPort}$|^This operation was aborted$`),
    );
  });

  it('should start its runners and its own start again while Kafka fails them after it answered, /readyz waiting for Kafka', async () => {
    const prefix = `${uniqueId('wait')}.`;
    const metricsPort = await freePort();
    let away = true;
    let ownStarts = 0;
    const failing = runnerFailingWhile(() => away);
    const lines: LogLine[] = [];
    const options = {
      name: 'test-service',
      env: { ...serviceEnv(prefix), URS_METRICS_PORT: String(metricsPort) },
      waitForKafka: true,
      setup: async () => ({
        runners: [failing.runner],
        // A part's start reading Kafka (the scorer's, the poller's offsets of urs.tenants), failing once.
        start: async () => {
          if (++ownStarts === 1) throw kafkaAway();
        },
      }),
    };
    const starting = startWith(options, { ...serviceBasics(options), logger: capturingLogger(lines) });
    starting.catch(() => undefined);
    try {
      // Kafka answered (the topics, the publisher), then went away as the runner connects.
      const answer = await waitFor(async () => (failing.starts() >= 2 ? notReady(metricsPort) : undefined), {
        timeoutMs: 15_000,
      });
      expect(answer).toEqual({ status: 'not-ready', reason: expect.stringContaining('waiting for Kafka') });
      away = false;
      const service = await starting;
      expect(ownStarts).toBe(2);
      expect(lines.map((line) => line.message)).toEqual(
        expect.arrayContaining([
          'start runner-0 failed; retrying until it succeeds',
          'start failed; retrying until it succeeds',
        ]),
      );
      expect(await service.close()).toBe(true);
    } finally {
      await deleteTopicsOf(createTestKafka(), prefix);
    }
  });

  it("should stop cleanly while it tries a runner's start again", async () => {
    const prefix = `${uniqueId('wait')}.`;
    const stop = new AbortController();
    const failing = runnerFailingWhile(() => true);
    const starting = startService({
      name: 'test-service',
      env: serviceEnv(prefix),
      waitForKafka: true,
      stop: stop.signal,
      setup: async () => ({ runners: [failing.runner] }),
    });
    starting.catch(() => undefined);
    try {
      await waitFor(() => failing.starts() >= 2, { timeoutMs: 15_000 });
      stop.abort();
      await expect(starting).rejects.toMatchObject({ code: 'SERVICE_STOPPED', closedCleanly: true });
      expect(failing.runner.state).toBe('closed');
    } finally {
      await deleteTopicsOf(createTestKafka(), prefix);
    }
  });

  it('should leave no connection attempt to Kafka running once stopped', async () => {
    const broker = await droppingBroker();
    const metricsPort = await freePort();
    const stop = new AbortController();
    // Every admin the wait for Kafka makes, so the test can see its connect end.
    const connects: Promise<void>[] = [];
    const admin = Kafka.prototype.admin;
    const adminSpy = jest.spyOn(Kafka.prototype, 'admin').mockImplementation(function (this: Kafka, config) {
      const made = admin.call(this, config);
      const connect = made.connect.bind(made);
      made.connect = () => {
        const attempt = connect();
        connects.push(attempt.catch(() => undefined));
        return attempt;
      };
      return made;
    });
    const starting = startService({
      name: 'test-service',
      env: {
        ...serviceEnv(`${uniqueId('wait')}.`),
        KAFKA_BROKERS: `127.0.0.1:${broker.port}`,
        URS_METRICS_PORT: String(metricsPort),
      },
      waitForKafka: true,
      stop: stop.signal,
      setup: async () => ({}),
    });
    starting.catch(() => undefined);
    try {
      await waitFor(() => connects.length > 0 && broker.connections() > 0, { timeoutMs: 15_000 });
      stop.abort();
      await expect(starting).rejects.toMatchObject({ code: 'SERVICE_STOPPED' });
      const inFlight = connects.length;
      const atStop = broker.connections();
      // A connect under way when the stop came may make its one attempt; none tries again after it.
      await Promise.all(connects);
      expect(broker.connections() - atStop).toBeLessThanOrEqual(inFlight);
    } finally {
      adminSpy.mockRestore();
      await new Promise((resolve) => broker.server.close(resolve));
    }
  });

  it('should start on its first try while one of its seed brokers is away', async () => {
    const away = await droppingBroker();
    const prefix = `${uniqueId('wait')}.`;
    const env = serviceEnv(prefix);
    // The broker that is away first: a client of no retries connects through its first seed.
    const brokers = [`127.0.0.1:${away.port}`, env['KAFKA_BROKERS'] as string];
    const lines: LogLine[] = [];
    const options = {
      name: 'test-service',
      env: { ...env, KAFKA_BROKERS: brokers.join(',') },
      waitForKafka: true,
      setup: async () => ({}),
    };
    try {
      const service = await startWith(options, { ...serviceBasics(options), logger: capturingLogger(lines) });
      expect(await service.close()).toBe(true);
      // The first try reached Kafka: no outage was waited through.
      expect(lines.filter((line) => line.message.startsWith('reaching Kafka to start'))).toEqual([]);
      // Tried once by the wait; the publisher connected through the seed broker that answered.
      expect(away.connections()).toBe(1);
    } finally {
      await new Promise((resolve) => away.server.close(resolve));
      await deleteTopicsOf(createTestKafka(), prefix);
    }
  });

  it('should leave no connect of its publisher running once stopped', async () => {
    const prefix = `${uniqueId('wait')}.`;
    const env = serviceEnv(prefix);
    // Kafka answers the wait's admin, then stops answering as the publisher connects.
    const proxy = await switchingProxy((env['KAFKA_BROKERS'] as string).split(',')[0] as string);
    const stop = new AbortController();
    let pending = 0;
    const settled: Promise<void>[] = [];
    const counted = (attempt: Promise<void>): Promise<void> => {
      pending++;
      settled.push(
        attempt.then(
          () => void pending--,
          () => void pending--,
        ),
      );
      return attempt;
    };
    const producer = Kafka.prototype.producer;
    const producerSpy = jest.spyOn(Kafka.prototype, 'producer').mockImplementation(function (
      this: Kafka,
      config,
    ) {
      const made = producer.call(this, config);
      const connectProducer = made.connect.bind(made);
      made.connect = () => counted(connectProducer());
      return made;
    });
    const admin = Kafka.prototype.admin;
    const adminSpy = jest.spyOn(Kafka.prototype, 'admin').mockImplementation(function (this: Kafka, config) {
      const made = admin.call(this, config);
      const connectAdmin = made.connect.bind(made);
      made.connect = () => counted(connectAdmin());
      return made;
    });
    const starting = startService({
      name: 'test-service',
      env: { ...env, KAFKA_BROKERS: proxy.address },
      waitForKafka: true,
      stop: stop.signal,
      onStep: (step) => {
        if (step === 'publisher') proxy.drop();
      },
      setup: async () => ({}),
    });
    starting.catch(() => undefined);
    try {
      await waitFor(() => proxy.dropped() > 0, { timeoutMs: 30_000 });
      stop.abort();
      await expect(starting).rejects.toMatchObject({ code: 'SERVICE_STOPPED' });
      const [inFlight, atStop] = [pending, proxy.dropped()];
      // A connect under way when the stop came may make its one attempt; none tries again after it.
      await Promise.all(settled);
      expect(proxy.dropped() - atStop).toBeLessThanOrEqual(inFlight);
    } finally {
      producerSpy.mockRestore();
      adminSpy.mockRestore();
      await proxy.close();
      await deleteTopicsOf(createTestKafka(), prefix);
    }
  });
});
