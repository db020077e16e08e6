import type { ConsumerRunConfig, EachBatchPayload, Kafka, KafkaMessage } from 'kafkajs';
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
import { tenantRecord, waitFor } from '@urs/testkit';

/** What KafkaJS stops a consumer for when its broker is away. */
const outage = Object.assign(new Error('Connection error: connect ECONNREFUSED 127.0.0.1:9092'), {
  name: 'KafkaJSConnectionError',
  code: 'ECONNREFUSED',
  retriable: true,
});

/** One run of the fake consumer: KafkaJS's Runner, running once it joined its group. */
interface FakeRun {
  running: boolean;
}

/**
 * As much of a KafkaJS 2.2.4 consumer as the runner's restarts meet: run() joins the group when the test lets
 * it (the first at once), a crash stops the run and emits CRASH, and disconnect() stops the run only once it
 * joined: one that is still joining is dropped unstopped, and joins afterwards (KafkaJS's runner.stop returns
 * at once when not running yet). `members` are the runs that joined and were not stopped.
 */
function fakeKafka() {
  const listeners = new Map<string, Array<(event: { payload: unknown }) => void>>();
  const emit = (name: string, payload: unknown): void => {
    for (const listener of listeners.get(name) ?? []) listener({ payload });
  };
  const members = new Set<FakeRun>();
  let current: FakeRun | null = null;
  let config: ConsumerRunConfig | undefined;
  let runs = 0;
  const joins: Array<() => void> = [];
  const consumer = {
    events: { GROUP_JOIN: 'join', CRASH: 'crash', REQUEST: 'request' },
    on: (name: string, listener: (event: { payload: unknown }) => void) => {
      listeners.set(name, [...(listeners.get(name) ?? []), listener]);
    },
    connect: async () => undefined,
    subscribe: async () => undefined,
    pause: () => undefined,
    async run(runConfig: ConsumerRunConfig) {
      config = runConfig;
      const run: FakeRun = { running: false };
      current = run;
      if (runs++ > 0) await new Promise<void>((resolve) => joins.push(resolve));
      run.running = true;
      members.add(run);
      emit('join', { memberId: 'member', memberAssignment: { batches: [0] } });
    },
    async disconnect() {
      if (current?.running) {
        current.running = false;
        members.delete(current);
      }
      current = null;
    },
  };
  return {
    kafka: { consumer: () => consumer } as unknown as Kafka,
    members,
    /** Restarts begun (run() called after the first). */
    restarts: () => joins.length,
    /** Lets the oldest restart waiting join its group. */
    join: () => joins.shift()?.(),
    /** KafkaJS stopping the consumer: the run stops (disconnected) and CRASH is emitted. */
    crash: () => {
      if (current) {
        current.running = false;
        members.delete(current);
      }
      current = null;
      emit('crash', { error: outage, groupId: 'group', restart: false });
    },
    /** A batch of the run of now, handed to the runner's eachBatch; what it asks of KafkaJS is recorded. */
    batch(messages: KafkaMessage[]) {
      const run = current;
      const asked: string[] = [];
      const payload = {
        batch: { topic: 'batches', partition: 0, messages },
        isRunning: () => run?.running ?? false,
        isStale: () => false,
        resolveOffset: (offset: string) => void asked.push(`resolve ${offset}`),
        commitOffsetsIfNecessary: async () => void asked.push('commit'),
        heartbeat: async () => void asked.push('heartbeat'),
      } as unknown as EachBatchPayload;
      return { asked, done: config?.eachBatch?.(payload) ?? Promise.resolve() };
    },
  };
}

function message(offset: string): KafkaMessage {
  return {
    key: Buffer.from('tenant'),
    value: Buffer.from(JSON.stringify(tenantRecord('tenant'))),
    offset,
    timestamp: '0',
    attributes: 0,
    headers: {},
  };
}

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
