import type { Kafka } from 'kafkajs';
import {
  createConsumerRunner,
  type ConsumerRunnerOptions,
  type InboundMessage,
  type Publisher,
} from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import { waitFor } from '@urs/testkit';
import { fakeKafka, message } from './fake-kafka';

type Handler = (message: InboundMessage<TenantRecord>) => Promise<void>;

function runner(kafka: Kafka, handler: Handler, extra: Partial<ConsumerRunnerOptions> = {}) {
  return createConsumerRunner({
    kafka,
    service: 'test',
    groupId: 'group',
    subscriptions: [{ topic: 'batches', contract: 'urs/tenant-record', handler }],
    publisher: {} as Publisher,
    dlqTopic: 'dlq',
    logger: silentLogger,
    metrics: new Registry({ processMetrics: false }),
    retry: retryPolicy({ maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 10 }),
    restart: retryPolicy({ maxAttempts: Infinity, initialDelayMs: 10, maxDelayMs: 10 }),
    ...extra,
  });
}

const tick = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('createConsumerRunner closing while its consumer restarts', () => {
  it('should wait for the restart joining its group, and disconnect the consumer it joined', async () => {
    const fake = fakeKafka();
    const consumer = runner(fake.kafka, async () => undefined, { drainTimeoutMs: 2_000 });
    await consumer.start();
    fake.crash();
    await waitFor(() => fake.restarts() === 1, { timeoutMs: 2_000, description: 'a restart joining' });
    let closed = false;
    const closing = consumer.close().then(() => (closed = true));
    await tick(50);
    // The broker answers the join only now, while close runs.
    fake.join();
    await closing;
    expect(closed).toBe(true);
    expect(fake.members.size).toBe(0);
    await tick(50);
    expect(fake.restarts()).toBe(0);
    expect(fake.members.size).toBe(0);
  });

  it('should disconnect a restart that joins after close gave up waiting for it', async () => {
    const fake = fakeKafka();
    const consumer = runner(fake.kafka, async () => undefined, { drainTimeoutMs: 100 });
    await consumer.start();
    fake.crash();
    await waitFor(() => fake.restarts() === 1, { timeoutMs: 2_000, description: 'a restart joining' });
    // Not left cleanly (the service exits 1), though closed.
    await expect(consumer.close()).rejects.toMatchObject({ code: 'CONSUMER_STILL_JOINING' });
    expect(consumer.state).toBe('closed');
    fake.join();
    await tick(20);
    expect(fake.members.size).toBe(0);
  });
});

describe('createConsumerRunner closing while it starts', () => {
  it('should wait for its first join, disconnect it, and stay closed', async () => {
    const fake = fakeKafka({ holdFirstJoin: true });
    const consumer = runner(fake.kafka, async () => undefined, { drainTimeoutMs: 2_000 });
    const starting = consumer.start();
    await waitFor(() => fake.restarts() === 1, { timeoutMs: 2_000, description: 'the start joining' });
    const closing = consumer.close();
    await tick(50);
    fake.join();
    await Promise.all([starting, closing]);
    expect(consumer.state).toBe('closed');
    expect(fake.members.size).toBe(0);
  });

  it('should tell a runner closed before its start (it never joined a group) from one started', async () => {
    const never = runner(fakeKafka().kafka, async () => undefined);
    await never.close();
    expect(never.state).toBe('closed');
    expect(never.startedOnce).toBe(false);
    const once = runner(fakeKafka().kafka, async () => undefined);
    await once.start();
    await once.close();
    expect(once.startedOnce).toBe(true);
  });
});

describe('createConsumerRunner starting while Kafka is away', () => {
  it('should be started again once a start failed to connect, and consume', async () => {
    const fake = fakeKafka({ failedConnects: 1 });
    const seen: string[] = [];
    const consumer = runner(fake.kafka, async (inbound) => void seen.push(inbound.value?.tenantId ?? ''));
    await expect(consumer.start()).rejects.toThrow('ECONNREFUSED');
    expect(consumer.state).toBe('created');
    expect(fake.connected()).toBe(false);
    await consumer.start();
    try {
      expect(consumer.state).toBe('running');
      expect(fake.members.size).toBe(1);
      await fake.batch([message('0')]).done;
      expect(seen).toEqual(['tenant']);
    } finally {
      await consumer.close();
    }
  });

  it('should not join its group when closed while it connects, and leave its consumer disconnected', async () => {
    const fake = fakeKafka({ holdConnect: true });
    const consumer = runner(fake.kafka, async () => undefined, { drainTimeoutMs: 100 });
    const starting = consumer.start();
    await waitFor(() => fake.connecting() === 1, { timeoutMs: 2_000, description: 'the start connecting' });
    // A start given up on a stop: the service closes the runner while its connect goes on.
    await consumer.close();
    fake.connect();
    await starting;
    expect(consumer.state).toBe('closed');
    expect(fake.members.size).toBe(0);
    expect(fake.connected()).toBe(false);
  });
});

describe('createConsumerRunner with ordering by key, its consumer crashing', () => {
  it('should abort the handlers under way at the crash: the stopped consumer may be out of its group', async () => {
    const fake = fakeKafka();
    let started = false;
    let aborted = false;
    const consumer = runner(
      fake.kafka,
      async (message) => {
        started = true;
        await new Promise<void>((resolve) =>
          message.signal?.addEventListener('abort', () => {
            aborted = true;
            resolve();
          }),
        );
        throw new Error('stopped');
      },
      { ordering: 'key', drainTimeoutMs: 100 },
    );
    await consumer.start();
    try {
      await fake.batch([message('0')]).done;
      await waitFor(() => started, { timeoutMs: 2_000, description: 'the handler started' });
      fake.crash();
      await waitFor(() => aborted, { timeoutMs: 2_000, description: 'the handler aborted' });
    } finally {
      await consumer.close().catch(() => undefined);
    }
  });
});

describe('createConsumerRunner with ordering by partition, a handler waiting', () => {
  beforeEach(() => jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick'] }));
  afterEach(() => jest.useRealTimers());

  it('should heartbeat meanwhile, and say it is not ready once its broker answered nothing for 10 s', async () => {
    const fake = fakeKafka();
    let release: () => void = () => undefined;
    const consumer = runner(fake.kafka, () => new Promise<void>((resolve) => (release = resolve)), {
      drainTimeoutMs: 100,
    });
    await consumer.start();
    const { asked, done } = fake.batch([message('0')]);
    try {
      await jest.advanceTimersByTimeAsync(9_000);
      fake.answer();
      await jest.advanceTimersByTimeAsync(9_000);
      expect(consumer.isReady()).toBe(true);
      // Asked every second; KafkaJS sends one per heartbeat interval.
      expect(asked.filter((call) => call === 'heartbeat').length).toBeGreaterThanOrEqual(17);
      await jest.advanceTimersByTimeAsync(2_000);
      expect(consumer.isReady()).toBe(false);
      fake.answer();
      expect(consumer.isReady()).toBe(true);
    } finally {
      release();
      await done;
      await consumer.close();
    }
    expect(asked).toContain('resolve 0');
  });
});
