import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createSecretSealer } from '@urs/secrets';
import { createKeyFingerprintStore, createTenantStore } from '@urs/store';
import {
  createTestKafka,
  createTestRedis,
  deleteTopics,
  runMain,
  tenantRecord,
  testInfra,
  uniqueId,
} from '@urs/testkit';

// The stages that open tenant secrets check their URS_SECRET_KEY at start (checkSecretKey, libs/secrets):
// each stage's real main.ts, given another key under the registrar's key id, must refuse to start.
const stages: [string, Record<string, string>][] = [
  ['registrar', { URS_API_TOKENS: 'token-of-the-test', URS_HTTP_PORT: '0' }],
  ['poller', {}],
  ['vuln-fetcher', {}],
];

describe('stages that open tenant secrets: start', () => {
  const redis = createTestRedis(uniqueId('secret-key'));
  const topicPrefix = `${uniqueId('sk')}.`;
  const registrarKey = randomBytes(32);

  beforeAll(async () => {
    const registrar = createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', registrarKey]]) });
    const tenants = createTenantStore(redis.client, redis.prefix);
    for (const tenantId of ['key-a', 'key-b']) {
      const record = tenantRecord(tenantId);
      await tenants.put({
        ...record,
        defender: { ...record.defender, clientSecret: registrar.seal('client-secret', tenantId) },
      });
    }
  });

  afterAll(async () => {
    await redis.close();
    const kafka = createTestKafka();
    const admin = kafka.admin();
    await admin.connect();
    const topics = (await admin.listTopics()).filter((topic) => topic.startsWith(topicPrefix));
    await admin.disconnect();
    await deleteTopics(kafka, topics);
  });

  test.each(stages)(
    '%s main should refuse to start naming URS_SECRET_KEY when its key opens none of the stored secrets',
    async (stage, env) => {
      const run = runMain(join(__dirname, '..', '..', 'services', stage, 'src', 'main.ts'), {
        KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
        REDIS_URL: testInfra().redisUrl,
        URS_TOPIC_PREFIX: topicPrefix,
        URS_REDIS_PREFIX: redis.prefix,
        URS_METRICS_PORT: '0',
        URS_LOG_LEVEL: 'info',
        // Another key under the same key id as the registrar's.
        URS_SECRET_KEY: randomBytes(32).toString('base64'),
        ...env,
      });
      expect(await run.exitWithin(45_000)).toBe(1);
      expect(run.lines).toContainEqual(
        expect.objectContaining({
          message: 'start failed',
          error: expect.objectContaining({
            code: 'CONFIG_INVALID',
            message: expect.stringMatching(
              /^URS_SECRET_KEY does not open any of the 2 stored tenant secrets/,
            ),
          }),
        }),
      );
    },
  );

  test.each(stages)(
    '%s main should refuse to start naming URS_SECRET_KEY when its new key differs from the one recorded under its id',
    async (stage, env) => {
      // A new key no stored secret uses yet, recorded by a stage that holds the right one; this one is mistyped.
      const right = createSecretSealer({ activeKeyId: 'k2', keys: new Map([['k2', randomBytes(32)]]) });
      await createKeyFingerprintStore(redis.client, redis.prefix).claim('k2', right.fingerprint('k2'));
      const run = runMain(join(__dirname, '..', '..', 'services', stage, 'src', 'main.ts'), {
        KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
        REDIS_URL: testInfra().redisUrl,
        URS_TOPIC_PREFIX: topicPrefix,
        URS_REDIS_PREFIX: redis.prefix,
        URS_METRICS_PORT: '0',
        URS_LOG_LEVEL: 'info',
        URS_SECRET_KEY: randomBytes(32).toString('base64'),
        URS_SECRET_KEY_ID: 'k2',
        // The right previous key, which opens the stored secrets.
        URS_SECRET_KEYS_PREVIOUS: `k1:${registrarKey.toString('base64')}`,
        ...env,
      });
      expect(await run.exitWithin(45_000)).toBe(1);
      expect(run.lines).toContainEqual(
        expect.objectContaining({
          message: 'start failed',
          error: expect.objectContaining({
            code: 'CONFIG_INVALID',
            message: expect.stringMatching(
              /^URS_SECRET_KEY differs from the key other processes hold under key id k2/,
            ),
          }),
        }),
      );
    },
  );
});
