import { createConsumerRunner, type Publisher } from '@urs/bus';
import { retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import { capturingLogger, waitFor, type LogLine } from '@urs/testkit';
import { fakeKafka, message } from './fake-kafka';

describe('createConsumerRunner closing with a handler that ignores its signal', () => {
  const rejections: unknown[] = [];
  const onRejection = (reason: unknown): void => void rejections.push(reason);
  beforeEach(() => {
    rejections.length = 0;
    process.on('unhandledRejection', onRejection);
  });
  afterEach(() => void process.off('unhandledRejection', onRejection));

  it.each([
    ['finishes', async () => undefined],
    [
      'fails',
      async () => {
        throw new Error('gave up late');
      },
    ],
  ])('should commit nothing and warn once, naming the group, when it %s after close', async (_, end) => {
    const fake = fakeKafka();
    const lines: LogLine[] = [];
    let finish: () => void = () => undefined;
    let called = false;
    const consumer = createConsumerRunner({
      kafka: fake.kafka,
      service: 'test',
      groupId: 'group',
      subscriptions: [
        {
          topic: 'batches',
          contract: 'urs/tenant-record',
          handler: async () => {
            called = true;
            // Its signal aborted on close, it keeps going all the same.
            await new Promise<void>((resolve) => (finish = resolve));
            await end();
          },
        },
      ],
      publisher: {} as Publisher,
      dlqTopic: 'dlq',
      logger: capturingLogger(lines),
      metrics: new Registry({ processMetrics: false }),
      retry: retryPolicy({ maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 10 }),
      drainTimeoutMs: 20,
    });
    await consumer.start();
    const batch = fake.batch([message('5'), message('6')]);
    await waitFor(() => called, { timeoutMs: 2_000, description: 'the handler called' });
    await consumer.close();
    await batch.done;
    const closedAt = lines.length;
    // The batch ended without its message: nothing resolved, nothing asked of KafkaJS after close.
    expect(batch.asked).not.toContain('resolve 5');
    const asked = [...batch.asked];
    finish();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(batch.asked).toEqual(asked);
    expect(rejections).toEqual([]);
    expect(lines.slice(closedAt)).toEqual([
      expect.objectContaining({ level: 'warn', groupId: 'group', offset: '5' }),
    ]);
  });
});
