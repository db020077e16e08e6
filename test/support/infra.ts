export interface TestInfra {
  kafkaBrokers: string[];
  redisUrl: string;
}

/**
 * The Kafka brokers and the Redis URL the global setup resolved (test/infra/global-setup.ts).
 * Fails when they are missing, e.g. when an integration test is run under the unit project.
 */
export function testInfra(env: NodeJS.ProcessEnv = process.env): TestInfra {
  const brokers = env['KAFKA_BROKERS'];
  const redisUrl = env['REDIS_URL'];
  if (!brokers || !redisUrl) {
    throw new Error(
      'KAFKA_BROKERS and REDIS_URL are not set: run integration tests through jest --selectProjects integration (or e2e), whose global setup resolves them',
    );
  }
  return { kafkaBrokers: brokers.split(',').map((b) => b.trim()), redisUrl };
}

/** What a service of its own reads: the test's Kafka and Redis, its own topics and keys. */
export function serviceEnv(prefix: string, logLevel = 'error'): Record<string, string> {
  return {
    KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
    REDIS_URL: testInfra().redisUrl,
    URS_TOPIC_PREFIX: prefix,
    URS_REDIS_PREFIX: `${prefix}:`,
    URS_METRICS_PORT: '0',
    URS_TOPIC_PARTITIONS: '1',
    URS_LOG_LEVEL: logLevel,
  };
}
