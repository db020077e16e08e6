import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createSecretSealer } from '@urs/secrets';
import { createTenantStore } from '@urs/store';
import {
  createTestKafka,
  createTestRedis,
  deleteTopics,
  runMain,
  tenantRecord,
  testInfra,
  uniqueId,
} from '@urs/testkit';

// After a Redis wipe the start check (checkSecretKey) finds no secret to try until the registrar rebuilt Redis
// from urs.tenants: a registrar with the wrong key must still refuse to start, once rebuilt, before it seals.
describe('registrar main: its URS_SECRET_KEY checked after the rebuild', () => {
  const redis = createTestRedis(uniqueId('secret-key-rebuild'));
  const topicPrefix = `${uniqueId('skr')}.`;
  const kafka = createTestKafka();

  beforeAll(async () => {
    // urs.tenants holds secrets sealed with the registrar's key k1; Redis holds nothing (wiped).
    const sealer = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', randomBytes(32)]]) });
    const topic = `${topicPrefix}urs.tenants`;
    const admin = kafka.admin();
    await admin.connect();
    try {
      await admin.createTopics({
        topics: [
          {
            topic,
            numPartitions: 1,
            replicationFactor: 1,
            configEntries: [{ name: 'cleanup.policy', value: 'compact' }],
          },
        ],
        waitForLeaders: true,
      });
    } finally {
      await admin.disconnect();
    }
    const producer = kafka.producer();
    await producer.connect();
    try {
      await producer.send({
        topic,
        messages: ['key-a', 'key-b'].map((tenantId) => {
          const record = tenantRecord(tenantId);
          return {
            key: tenantId,
            value: JSON.stringify({
              ...record,
              defender: { ...record.defender, clientSecret: sealer.seal('client-secret', tenantId) },
            }),
          };
        }),
      });
    } finally {
      await producer.disconnect();
    }
  });

  afterAll(async () => {
    await redis.close();
    const admin = kafka.admin();
    await admin.connect();
    const topics = (await admin.listTopics()).filter((topic) => topic.startsWith(topicPrefix));
    await admin.disconnect();
    await deleteTopics(kafka, topics);
  });

  it('should refuse to start naming URS_SECRET_KEY once it rebuilt Redis, before it takes a write', async () => {
    const run = runMain(join(__dirname, '..', 'src', 'main.ts'), {
      KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
      REDIS_URL: testInfra().redisUrl,
      URS_TOPIC_PREFIX: topicPrefix,
      URS_REDIS_PREFIX: redis.prefix,
      URS_METRICS_PORT: '0',
      URS_HTTP_PORT: '0',
      URS_API_TOKENS: 'token-of-the-test',
      URS_LOG_LEVEL: 'info',
      // Another key under the same key id as the one that sealed the secrets.
      URS_SECRET_KEY: randomBytes(32).toString('base64'),
    });
    expect(await run.exitWithin(60_000)).toBe(1);
    const messages = run.lines.map((line) => line['message']);
    expect(messages).toContain('tenants rebuilt from urs.tenants');
    // Its REST port opens before the rebuild (Kafka may be away), but answers every write 503 until the key
    // was checked against what was rebuilt: see below, nothing was sealed.
    expect(run.lines).toContainEqual(
      expect.objectContaining({
        message: 'start failed',
        error: expect.objectContaining({
          code: 'CONFIG_INVALID',
          message: expect.stringMatching(/^URS_SECRET_KEY does not open any of the 2 stored tenant secrets/),
        }),
      }),
    );
    // The rebuild wrote the records back as they were: nothing was sealed with the wrong key.
    const tenants = createTenantStore(redis.client, redis.prefix);
    expect((await tenants.get('key-a'))?.defender.clientSecret.keyId).toBe('k1');
  });
});
