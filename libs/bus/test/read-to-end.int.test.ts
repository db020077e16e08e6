import { readTopicUpTo } from '@urs/bus';
import { isInfrastructureFault } from '@urs/resilience';
import { createTestKafka, createUniqueTopics, deleteTopics, uniqueId } from '@urs/testkit';

// A read that does not reach its end in time (Kafka slow at a rebuild) says nothing of the message that asked
// for it: the bus must hold that message, never dead-letter it for Kafka's slowness.
describe('readTopicUpTo over Kafka', () => {
  const kafka = createTestKafka();
  let topics: string[] = [];

  afterEach(async () => {
    await deleteTopics(kafka, topics);
  });

  it('readTopicUpTo should fail a read that does not reach its end in time as an infrastructure fault', async () => {
    topics = await createUniqueTopics(kafka, [{ prefix: 'read-to-end', numPartitions: 1 }]);
    const [topic] = topics as [string];
    // Offset 5 of an empty partition is never reached: the read runs out its time.
    const read = readTopicUpTo(
      kafka,
      topic,
      new Map([[0, 5n]]),
      uniqueId('read-to-end'),
      1_000,
      () => undefined,
    );
    const failure: unknown = await read.then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toMatchObject({ message: expect.stringMatching(/did not reach its end within 1000 ms/) });
    expect(isInfrastructureFault(failure)).toBe(true);
  });
});
