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
import { fakeKafka, message, outage } from './fake-kafka';

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
    await consumer.close();
    expect(consumer.state).toBe('closed');
    fake.join();
    await tick(20);
    expect(fake.members.size).toBe(0);
  });
});

describe('createConsumerRunner with ordering by partition after its consumer crashed', () => {
  it("should commit nothing of the old run's batch: the restarted consumer handles and commits it", async () => {
    const fake = fakeKafka();
    const signals: AbortSignal[] = [];
    let finishFirst: () => void = () => undefined;
    const consumer = runner(fake.kafka, async (inbound) => {
      signals.push(inbound.signal as AbortSignal);
      // Held first (Kafka away), then its next attempt is under way when the consumer crashes.
      if (signals.length === 1) throw outage;
      if (signals.length === 2) await new Promise<void>((resolve) => (finishFirst = resolve));
    });
    await consumer.start();
    const old = fake.batch([message('5')]);
    await waitFor(() => signals.length === 2, {
      timeoutMs: 2_000,
      description: 'the held message tried again',
    });
    fake.crash();
    await waitFor(() => fake.restarts() === 1, { timeoutMs: 2_000, description: 'a restart joining' });
    fake.join();
    await waitFor(() => fake.members.size === 1, { timeoutMs: 2_000, description: 'the restart joined' });
    const restarted = fake.batch([message('5')]);
    await restarted.done;
    expect(restarted.asked).toEqual(['resolve 5', 'commit', 'heartbeat', 'commit']);
    // The old run's attempt succeeds after the restart: its work is the restarted consumer's now.
    finishFirst();
    await old.done;
    // The heartbeat before its retry, before the crash; nothing after it.
    expect(old.asked).toEqual(['heartbeat']);
    expect(signals[1]?.aborted).toBe(true);
    await consumer.close();
  });

  it("should end a held message's retries at the crash, asking nothing more of the old membership", async () => {
    // Full jitter at its most: each pause as long as the policy allows.
    const random = jest.spyOn(Math, 'random').mockReturnValue(0.99);
    const fake = fakeKafka();
    let attempts = 0;
    const consumer = runner(
      fake.kafka,
      async () => {
        attempts++;
        throw outage;
      },
      // Retries a second apart: the crash must cut the pause short.
      { retry: retryPolicy({ maxAttempts: 3, initialDelayMs: 1_000, maxDelayMs: 1_000 }) },
    );
    await consumer.start();
    const old = fake.batch([message('5'), message('6')]);
    await waitFor(() => attempts === 1, { timeoutMs: 2_000, description: 'the message held' });
    fake.crash();
    const started = Date.now();
    await old.done;
    expect(Date.now() - started).toBeLessThan(500);
    expect(attempts).toBe(1);
    expect(old.asked).toEqual([]);
    await waitFor(() => fake.restarts() === 1, { timeoutMs: 2_000, description: 'a restart joining' });
    fake.join();
    await consumer.close();
    random.mockRestore();
  });
});
