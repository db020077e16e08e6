import type { Kafka } from 'kafkajs';
import { createConsumerRunner, createPublisher, type ConsumerRunner, type Publisher } from '@urs/bus';
import { silentLogger } from '@urs/logging';
import { retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import {
  createTestKafka,
  createUniqueTopics,
  deleteTopics,
  readDeadLetters,
  tenantRecord,
  uniqueId,
  waitFor,
} from '@urs/testkit';

/** The output topic's limit on a record batch: small, so that one record of a few KB is refused. */
const OUTPUT_MAX_MESSAGE_BYTES = 4096;

describe('a record Kafka refuses as too large', () => {
  let kafka: Kafka;
  let topics: string[];
  let publisher: Publisher;
  let runner: ConsumerRunner | undefined;

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    topics = await createUniqueTopics(kafka, [
      { prefix: 'tenants' },
      { prefix: 'dlq' },
      {
        prefix: 'output',
        configEntries: [{ name: 'max.message.bytes', value: String(OUTPUT_MAX_MESSAGE_BYTES) }],
      },
    ]);
    publisher = await createPublisher(kafka);
  });

  afterEach(async () => {
    await runner?.close();
    runner = undefined;
    await publisher.close();
    await deleteTopics(kafka, topics);
  });

  it("should dead-letter the message at once, its letter naming the record's size, and go on with the next tenant's", async () => {
    const [input, dlq, output] = topics as [string, string, string];
    const attempts = new Map<string, number>();
    const produced: string[] = [];
    runner = createConsumerRunner({
      kafka,
      service: 'test',
      groupId: uniqueId('group'),
      subscriptions: [
        {
          topic: input,
          contract: 'urs/tenant-record',
          handler: async (message) => {
            const tenantId = message.value?.tenantId ?? '';
            attempts.set(tenantId, (attempts.get(tenantId) ?? 0) + 1);
            // One tenant's output is larger than the topic takes; the other's fits.
            const size = tenantId === 'big' ? 3 * OUTPUT_MAX_MESSAGE_BYTES : 100;
            await publisher.sendRaw(output, [{ key: tenantId, value: 'x'.repeat(size) }]);
            produced.push(tenantId);
          },
        },
      ],
      publisher,
      dlqTopic: dlq,
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
      // Were the refusal taken as retryable, the message would be tried 20 times first.
      retry: retryPolicy({ maxAttempts: 20, initialDelayMs: 10, maxDelayMs: 20 }),
    });
    await runner.start();
    // Both on the one partition: the other tenant's message waits behind the refused one.
    await publisher.send(input, 'urs/tenant-record', [
      { key: 'big', value: tenantRecord('big') },
      { key: 'small', value: tenantRecord('small') },
    ]);
    await waitFor(() => produced.includes('small'), { timeoutMs: 30_000 });
    const [letter] = await readDeadLetters(kafka, dlq, 1);
    expect(attempts.get('big')).toBe(1);
    expect(produced).toEqual(['small']);
    expect(letter).toMatchObject({ key: 'big', sourceTopic: input, offset: '0' });
    expect(letter?.error.code).toBe('RECORD_TOO_LARGE');
    expect(letter?.error.message).toContain(`${output} refused a record as too large (MESSAGE_TOO_LARGE)`);
    expect(letter?.error.message).toContain(`the largest record ${3 * OUTPUT_MAX_MESSAGE_BYTES + 3} bytes`);
    expect(letter?.error.message).toContain('max.message.bytes');
  });
});
