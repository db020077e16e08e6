import { startService } from '@urs/runtime';
import { createTestKafka, deleteTopics, uniqueId } from '@urs/testkit';
import { deleteTopicsOf, serviceEnv } from './support';

/** The retries KafkaJS spent before it gave a send up: on the error, or on one of its causes. */
function retriesSpent(error: unknown): number | undefined {
  for (let e = error as { retryCount?: unknown; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (typeof e.retryCount === 'number') return e.retryCount;
  }
  return undefined;
}

describe('startService publisher', () => {
  it('should give a send to a topic deleted since the start up after its own few retries, with TOPIC_MISSING naming the topic', async () => {
    const prefix = `${uniqueId('svc')}.`;
    const kafka = createTestKafka();
    const service = await startService({
      name: 'test-service',
      defaultMetricsPort: 0,
      env: serviceEnv(prefix),
      setup: async () => ({}),
    });
    const { topics } = service.context.config;
    try {
      await deleteTopics(kafka, [topics.deviceScores]);
      const failure = await service.context.publisher
        .sendRaw(topics.deviceScores, [{ key: 'a', value: '{}' }])
        .then(
          () => undefined,
          (error: unknown) => error,
        );
      expect(failure).toMatchObject({
        code: 'TOPIC_MISSING',
        message: expect.stringContaining(topics.deviceScores),
      });
      // Tried again by the publisher (PUBLISHER_RETRY_MS, which a stop ends), not by KafkaJS: not the ~64 s of
      // the client's retries, during which neither a consumer's held messages nor a REST client's 503 would say
      // anything of the fault.
      expect(retriesSpent(failure)).toBe(0);
    } finally {
      expect(await service.close()).toBe(true);
      await deleteTopicsOf(kafka, prefix);
    }
  }, 120_000);
});
