import { Kafka, logLevel } from 'kafkajs';
import {
  createConsumerRunner,
  createPublisher,
  type ConsumerRunner,
  type ConsumerRunnerOptions,
  type DeadLetterLedger,
  type InboundMessage,
  type Publisher,
} from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { UrsError, retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import {
  capturingLogger,
  createTestKafka,
  createUniqueTopics,
  deleteTopics,
  readDeadLetters,
  tenantRecord,
  uniqueId,
  waitFor,
  type LogLine,
} from '@urs/testkit';

describe('createConsumerRunner', () => {
  let kafka: Kafka;
  let topics: string[];
  let publisher: Publisher;
  const runners: ConsumerRunner[] = [];

  beforeAll(() => {
    kafka = createTestKafka();
  });

  // A producer keeps every topic it ever wrote to in its metadata requests, and a deleted topic makes
  // them fail: one publisher per test, closed before its topics are deleted.
  beforeEach(async () => {
    topics = await createUniqueTopics(kafka, [{ prefix: 'tenants', numPartitions: 2 }, { prefix: 'dlq' }]);
    publisher = await createPublisher(kafka);
  });

  afterEach(async () => {
    await Promise.all(runners.splice(0).map((runner) => runner.close()));
    await publisher.close();
    await deleteTopics(kafka, topics);
  });

  function start(
    groupId: string,
    handler: (message: InboundMessage<TenantRecord>) => Promise<void>,
    extra: Partial<ConsumerRunnerOptions> = {},
  ): ConsumerRunner {
    const runner = createConsumerRunner({
      kafka,
      service: 'test',
      groupId,
      subscriptions: [
        { topic: topics[0] as string, contract: 'urs/tenant-record', tombstones: true, handler },
      ],
      publisher,
      dlqTopic: topics[1] as string,
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
      retry: retryPolicy({ maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 20 }),
      ...extra,
    });
    runners.push(runner);
    return runner;
  }

  /** A runner of `groupId` handles two records of one key, then closes; answers the tenants it saw. */
  async function handleTwoAndClose(
    groupId: string,
    extra: Partial<ConsumerRunnerOptions> = {},
  ): Promise<string[]> {
    const seen: string[] = [];
    const runner = start(groupId, async (message) => void seen.push(message.value?.tenantId ?? ''), extra);
    await runner.start();
    await publisher.send(topics[0] as string, 'urs/tenant-record', [
      { key: 'k', value: tenantRecord('one') },
      { key: 'k', value: tenantRecord('two') },
    ]);
    await waitFor(() => seen.length === 2, { timeoutMs: 30_000 });
    await runner.close();
    return seen;
  }

  it('should hand valid messages and tombstones to the handler and dead-letter poison, then go on', async () => {
    const [topic, dlq] = topics as [string, string];
    const seen: (string | null)[] = [];
    await start(uniqueId('group'), async (message) => {
      seen.push(message.value === null ? `deleted:${message.key}` : message.value.tenantId);
    }).start();

    const producer = kafka.producer();
    await producer.connect();
    await producer.send({
      topic,
      messages: [
        { key: 'a', value: JSON.stringify(tenantRecord('a')), partition: 0 },
        { key: 'b', value: '{"not": "closed"', partition: 0 },
        { key: 'c', value: JSON.stringify({ ...tenantRecord('c'), revision: 0 }), partition: 0 },
        { key: 'd', value: JSON.stringify(tenantRecord('d')), partition: 0 },
        { key: 'a', value: null, partition: 0 },
      ],
    });
    await producer.disconnect();

    await waitFor(() => seen.length >= 3, { timeoutMs: 30_000 });
    expect(seen).toEqual(['a', 'd', 'deleted:a']);
    const letters = await readDeadLetters(kafka, dlq, 2);
    expect(letters.map((letter) => [letter.key, letter.error.code, letter.offset])).toEqual([
      ['b', 'MESSAGE_NOT_JSON', '1'],
      ['c', 'CONTRACT_INVALID', '2'],
    ]);
    expect(letters[1]?.error.message).toContain('revision must be at least 1');
    expect(letters[0]?.sourceTopic).toBe(topic);
  });

  it('should retry a retryable failure in place and dead-letter a non-retryable one', async () => {
    const [topic, dlq] = topics as [string, string];
    let attempts = 0;
    const handled: string[] = [];
    await start(uniqueId('group'), async (message) => {
      const id = message.value?.tenantId ?? '';
      if (id === 'flaky' && ++attempts < 3) throw new UrsError('REDIS_DOWN', 'not yet', { canRetry: true });
      if (id === 'poison') throw new UrsError('PROFILE_INVALID', 'weights must total 100');
      handled.push(id);
    }).start();
    await publisher.send(topic, 'urs/tenant-record', [
      { key: 'x', value: tenantRecord('flaky') },
      { key: 'x', value: tenantRecord('poison') },
      { key: 'x', value: tenantRecord('after') },
    ]);
    await waitFor(() => handled.length >= 2, { timeoutMs: 30_000 });
    expect(handled).toEqual(['flaky', 'after']);
    expect(attempts).toBe(3);
    const [letter] = await readDeadLetters(kafka, dlq, 1);
    expect(letter?.error).toEqual({ code: 'PROFILE_INVALID', message: 'weights must total 100' });
  });

  it('should hold a message whose publisher cannot reach Kafka past maxAttempts, say it is not ready while held, and handle it once Kafka is back, not dead-lettered', async () => {
    const [topic, dlq] = topics as [string, string];
    // A broker nobody answers on: what a handler's produce meets while the cluster is away.
    const away = new Kafka({
      clientId: uniqueId('away'),
      brokers: ['127.0.0.1:1'],
      retry: { retries: 0 },
      logLevel: logLevel.NOTHING,
    });
    let kafkaBack = false;
    let attempts = 0;
    const handled: string[] = [];
    const runner = start(
      uniqueId('group'),
      async (message) => {
        attempts++;
        // Its publisher's connection, refused until Kafka is back (KafkaJS's retries exhausted).
        if (!kafkaBack) await (await createPublisher(away)).close();
        handled.push(message.value?.tenantId ?? '');
      },
      { heldNotReadyAfterMs: 500 },
    );
    await runner.start();
    await waitFor(() => runner.isReady(), { timeoutMs: 30_000 });
    await publisher.send(topic, 'urs/tenant-record', [{ key: 'k', value: tenantRecord('held') }]);
    await waitFor(() => attempts > 6 && !runner.isReady(), { timeoutMs: 30_000 });
    expect(handled).toEqual([]);

    kafkaBack = true;
    await waitFor(() => handled.length === 1 && runner.isReady(), { timeoutMs: 30_000 });
    expect(handled).toEqual(['held']);
    const admin = kafka.admin();
    await admin.connect();
    try {
      expect((await admin.fetchTopicOffsets(dlq)).map((partition) => partition.high)).toEqual(['0']);
    } finally {
      await admin.disconnect();
    }
  });

  it('should commit nothing when told so: the group holds no offsets and a restart reads from the beginning', async () => {
    const [topic] = topics as [string, string];
    const groupId = uniqueId('group');
    // Nothing is dead-lettered here: a ledger that lets every letter be written.
    const deadLetters: DeadLetterLedger = {
      claim: async () => 'claimed',
      written: async () => undefined,
      release: async () => undefined,
    };
    await handleTwoAndClose(groupId, { commitOffsets: false, deadLetters });

    const admin = kafka.admin();
    await admin.connect();
    try {
      const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
      expect(offsets?.partitions.map((partition) => partition.offset)).toEqual(['-1', '-1']);
    } finally {
      await admin.disconnect();
    }
    const second: string[] = [];
    await start(groupId, async (message) => void second.push(message.value?.tenantId ?? ''), {
      commitOffsets: false,
      deadLetters,
    }).start();
    await waitFor(() => second.length >= 2, { timeoutMs: 30_000 });
    expect(second).toEqual(['one', 'two']);
    expect(() =>
      createConsumerRunner({
        kafka,
        service: 'test',
        groupId,
        subscriptions: [],
        publisher,
        dlqTopic: topic,
        logger: silentLogger,
        metrics: new Registry({ processMetrics: false }),
        ordering: 'key',
        commitOffsets: false,
        deadLetters,
      }),
    ).toThrow("commitOffsets false needs ordering 'partition'");
    // Without a ledger, every start would dead-letter every invalid record again.
    expect(() =>
      createConsumerRunner({
        kafka,
        service: 'test',
        groupId,
        subscriptions: [],
        publisher,
        dlqTopic: topic,
        logger: silentLogger,
        metrics: new Registry({ processMetrics: false }),
        commitOffsets: false,
      }),
    ).toThrow('commitOffsets false needs deadLetters');
  });

  it('should resume after a restart from the last committed offset without redelivering handled messages', async () => {
    const [topic] = topics as [string, string];
    const groupId = uniqueId('group');
    const first = await handleTwoAndClose(groupId);

    await publisher.send(topic, 'urs/tenant-record', [{ key: 'k', value: tenantRecord('three') }]);
    const second: string[] = [];
    await start(groupId, async (message) => void second.push(message.value?.tenantId ?? '')).start();
    await waitFor(() => second.length >= 1, { timeoutMs: 30_000 });
    expect(first).toEqual(['one', 'two']);
    expect(second).toEqual(['three']);
  });

  it('should keep its member in the group while a handler waits past the session timeout, handling the message once', async () => {
    const [topic] = topics as [string, string];
    const sessionTimeoutMs = 6_000;
    const seen: string[] = [];
    const runner = start(
      uniqueId('group'),
      async (message) => {
        const id = message.value?.tenantId ?? '';
        seen.push(id);
        // Its first delivery waits twice the session timeout, as a push waiting for a slow rebuild.
        if (id === 'slow' && seen.length === 1) {
          await new Promise((resolve) => setTimeout(resolve, 2 * sessionTimeoutMs));
        }
      },
      { sessionTimeoutMs },
    );
    await runner.start();
    await publisher.send(topic, 'urs/tenant-record', [
      { key: 'k', value: tenantRecord('slow') },
      { key: 'k', value: tenantRecord('next') },
    ]);
    // Of the same partition: were the member evicted meanwhile, 'slow' would be handled again before 'next'.
    await waitFor(() => seen.includes('next'), { timeoutMs: 45_000 });
    expect(seen).toEqual(['slow', 'next']);
  }, 90_000);

  it('should close within twice drainTimeoutMs when a handler ignores its stop, leaving its message uncommitted', async () => {
    const [topic] = topics as [string, string];
    const groupId = uniqueId('group');
    const drainTimeoutMs = 500;
    const handled: string[] = [];
    let stuck = false;
    let signal: AbortSignal | undefined;
    let release: () => void = () => undefined;
    // The close's steps as they happen: its log lines, the handler's abort, its end.
    const events: string[] = [];
    const lines: LogLine[] = [];
    const logged = lines.push.bind(lines);
    lines.push = (...added) => {
      events.push(...added.map((line) => line.message));
      return logged(...added);
    };
    const runner = start(
      groupId,
      async (message) => {
        const id = message.value?.tenantId ?? '';
        if (id === 'stuck') {
          stuck = true;
          signal = message.signal;
          message.signal?.addEventListener('abort', () => events.push('handler aborted'));
          // Ignores its signal: returns only when the test lets it, after close.
          await new Promise<void>((resolve) => (release = resolve));
        }
        handled.push(id);
      },
      { drainTimeoutMs, logger: capturingLogger(lines) },
    );
    await runner.start();
    await publisher.send(topic, 'urs/tenant-record', [
      { key: 'k', value: tenantRecord('first') },
      { key: 'k', value: tenantRecord('stuck') },
    ]);
    await waitFor(() => stuck, { timeoutMs: 30_000 });

    const closed = await Promise.race([
      runner
        .close()
        .then(() => void events.push('closed'))
        .then(() => true),
      new Promise<false>((resolve) => setTimeout(() => resolve(false), 15_000).unref()),
    ]);
    release();
    expect(closed).toBe(true);
    expect(signal?.aborted).toBe(true);
    // A drain, the abort, a drain again, then the close ends: not stuck on the handler (the race above),
    // however long disconnecting takes. How long each drain waits: drain.test.ts.
    const aborting = 'messages in flight did not finish in time; aborting them';
    const givenUp = 'handlers did not stop when aborted; their messages stay uncommitted';
    expect(
      events.filter((event) => [aborting, givenUp, 'handler aborted', 'closed'].includes(event)),
    ).toEqual([aborting, 'handler aborted', givenUp, 'closed']);
    expect(handled).toEqual(['first']);

    const admin = kafka.admin();
    await admin.connect();
    try {
      const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
      // 'first' is committed, 'stuck' (offset 1 of the same partition) is not.
      expect(offsets?.partitions.map((partition) => partition.offset).sort()).toEqual(['-1', '1']);
    } finally {
      await admin.disconnect();
    }
  });
});
