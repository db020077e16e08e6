import type { Kafka } from 'kafkajs';
import { createPublisher, topicOffsets, type Publisher } from '@urs/bus';
import { silentLogger } from '@urs/logging';
import { createRegistrarStateStore, createTenantStore } from '@urs/store';
import {
  createTestKafka,
  createUniqueTopics,
  createTestRedis,
  deleteTopics,
  type TestRedis,
} from '@urs/testkit';
import { tenantRoutes } from '../../src/http/tenants';
import { createTenantRegistry } from '../../src/registry';
import { registrationBody, testSealer } from '../fakes';
import { routeCaller } from './call';

// The REST routes over the registry as main.ts wires them, writing to a real `urs.tenants` and Redis.
describe('tenantRoutes over Kafka and Redis', () => {
  let kafka: Kafka;
  let topic: string;
  let redis: TestRedis;
  let publisher: Publisher;

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    [topic] = (await createUniqueTopics(kafka, [
      { prefix: 'tenants', numPartitions: 3, configEntries: [{ name: 'cleanup.policy', value: 'compact' }] },
    ])) as [string];
    redis = createTestRedis();
    publisher = await createPublisher(kafka);
  });

  afterEach(async () => {
    await publisher.close();
    await redis.close();
    await deleteTopics(kafka, [topic]);
  });

  function setup() {
    const tenants = createTenantStore(redis.client, redis.prefix);
    const sealer = testSealer();
    const registry = createTenantRegistry({
      tenants,
      state: createRegistrarStateStore(redis.client, redis.prefix),
      publisher,
      tenantsTopic: topic,
      sealer,
      schedules: { clear: async () => undefined, carryFailure: async () => true },
      logger: silentLogger,
    });
    const call = routeCaller(
      tenantRoutes({
        registry,
        tenants,
        sealer,
        ensureRebuilt: async () => undefined,
        accessTestTimeoutMs: 5_000,
        checkAccess: () => Promise.reject(new Error('not called')),
      }),
    );
    return { tenants, registry, call };
  }

  /** How many records `urs.tenants` holds (compaction does not run on a topic this young). */
  async function recordsOnTopic(): Promise<number> {
    const offsets = await topicOffsets(kafka, topic);
    return offsets.reduce((sum, partition) => sum + Number(partition.high), 0);
  }

  it('PUT should write one record when the same registration is PUT again, keeping the status', async () => {
    const { tenants, call } = setup();
    const first = await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    expect(first.status).toBe(201);
    const failed = {
      state: 'error',
      lastErrorCode: 'DEFENDER_THROTTLED',
      lastErrorMessage: 'Defender answered 429: try again in 60 s',
    } as const;
    await tenants.updateStatus('acme', failed);
    const { clientSecret: _secret, ...withoutSecret } = registrationBody();
    for (const body of [registrationBody(), withoutSecret]) {
      const again = await call('PUT', '/v1/tenants/acme/defender', body);
      expect(again).toMatchObject({
        status: 200,
        body: { revision: (first.body as { revision: number }).revision, status: failed },
      });
    }
    expect(await recordsOnTopic()).toBe(1);
    expect(await tenants.getStatus('acme')).toMatchObject(failed);
  });

  it('PUT should write the same settings when they take the tenant over from Director', async () => {
    const { tenants, registry, call } = setup();
    await registry.register(
      { tenantId: 'acme', defender: registrationBody() as never },
      { source: 'director', generation: 1 },
      { skipIfUnchanged: true },
    );
    const takeover = await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    expect(takeover).toMatchObject({ status: 200, body: { source: 'rest' } });
    expect(await recordsOnTopic()).toBe(2);
    expect((await tenants.get('acme'))?.source).toBe('rest');
  });
});
