import type { Kafka } from 'kafkajs';
import {
  createConsumerRunner,
  createPublisher,
  lastOffsets,
  topicOffsets,
  type ConsumerRunner,
  type Publisher,
  type TopicSubscription,
} from '@urs/bus';
import type { EnrichedBatch, ScoreBatch, TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { compileProfile, parseProfile } from '@urs/scoring';
import { createDeadLetterLedger, createTenantStore, scoreStoreFor } from '@urs/store';
import { Registry } from '@urs/telemetry';
import {
  createTestKafka,
  createUniqueTopics,
  deleteTopics,
  inboundMessage,
  readDeadLetters,
  tenantRecord,
  testRedisPerTest,
  uniqueId,
  waitFor,
} from '@urs/testkit';
import { createScoreHandler } from '../src/handler';
import {
  createProfileCache,
  createTenantsHandler,
  tenantsSubscription,
  type ProfileCache,
} from '../src/profiles';

/** The scorer's risk profiles read from `urs.tenants` after a start, as its profile reader reads them. */
describe('createProfileCache after a start, against the real Kafka', () => {
  const redis = testRedisPerTest();
  const tenantId = 't1';
  let kafka: Kafka;
  let topics: [string, string];
  let publisher: Publisher;
  let runner: ConsumerRunner | undefined;
  /** Lets the held profile reader go on (a failed test must not leave it holding its runner's close). */
  let release: () => void = () => undefined;

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    topics = (await createUniqueTopics(kafka, [
      { prefix: 'tenants', numPartitions: 2 },
      { prefix: 'dlq' },
    ])) as [string, string];
    publisher = await createPublisher(kafka);
  });

  afterEach(async () => {
    release();
    await runner?.close();
    runner = undefined;
    await publisher.close();
    await deleteTopics(kafka, topics);
  });

  const weighted = (criticalRisk: number) => ({ weights: { criticalRisk, operational: 100 - criticalRisk } });
  const revision = (number: number, criticalRisk: number): TenantRecord => ({
    ...tenantRecord(tenantId, { revision: number }),
    defender: { ...tenantRecord(tenantId).defender, riskProfile: weighted(criticalRisk) },
  });

  /** Reads `urs.tenants` from its beginning through `subscription`, and tells `profiles` where it ends. */
  async function startReader(profiles: ProfileCache, subscription: TopicSubscription<'urs/tenant-record'>) {
    runner = createConsumerRunner({
      kafka,
      service: 'scorer',
      groupId: uniqueId('profiles'),
      commitOffsets: false,
      deadLetters: createDeadLetterLedger(redis.client, redis.prefix),
      subscriptions: [subscription],
      publisher,
      dlqTopic: topics[1],
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
    });
    await runner.start();
    profiles.expectEnd(lastOffsets(await topicOffsets(kafka, topics[0])));
  }

  function enriched(): EnrichedBatch {
    const cycleStartedAt = new Date().toISOString();
    return {
      schemaVersion: 1,
      tenantId,
      cycleId: 'c1',
      cycleStartedAt,
      batchIndex: 0,
      lastBatch: true,
      totalBatches: 1,
      totalDevices: 1,
      vulnerabilityMode: 'per-device',
      collectedAt: cycleStartedAt,
      devices: [
        { machine: { id: 'd1', riskScore: 'High', lastSeen: cycleStartedAt }, vulnerabilities: null },
      ],
    };
  }

  it('should score with the latest revision while older ones are still being read, and from memory once read', async () => {
    const [tenantsTopic] = topics;
    const tenants = createTenantStore(redis.client, redis.prefix);
    const revisions = [revision(1, 0), revision(2, 30), revision(3, 100)];
    // The registrar writes the tenant store first, then the topic: the store holds the latest.
    await tenants.put(revisions[2] as TenantRecord);
    await publisher.send(
      tenantsTopic,
      'urs/tenant-record',
      revisions.map((value) => ({ key: tenantId, value })),
    );
    const profiles = createProfileCache({ tenants, logger: silentLogger });
    const onTenant = createTenantsHandler(profiles);
    // The reader held after the first revision: the moment a batch meets an out-of-date profile in memory.
    const held = new Promise<void>((resolve) => (release = resolve));
    await startReader(profiles, {
      topic: tenantsTopic,
      contract: 'urs/tenant-record',
      tombstones: true,
      fromBeginning: true,
      handler: async (message) => {
        await onTenant(message);
        if (message.value?.revision === 1) await held;
      },
    });
    await waitFor(() => profiles.size() === 1);

    const sent: ScoreBatch[] = [];
    const handler = createScoreHandler({
      profiles,
      scores: scoreStoreFor(redis.client, { keyPrefix: redis.prefix, scoreHistoryCycles: 10 }),
      publisher: {
        ...publisher,
        send: async (_topic, _contract, messages) =>
          void sent.push(...messages.map((m) => m.value as ScoreBatch)),
      },
      topic: 'urs.device-scores',
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
    });
    const latest = compileProfile(parseProfile(weighted(100))).hash;
    const score = () => handler(inboundMessage(enriched(), { key: tenantId }));

    await score();
    expect(profiles.caughtUp()).toBe(false);
    expect(sent[0]?.devices[0]?.profileHash).toBe(latest);

    release();
    await waitFor(() => profiles.caughtUp());
    // Read to its end: from memory, whatever the tenant store holds since.
    await tenants.put(revision(4, 50));
    await score();
    expect(sent[1]?.devices[0]?.profileHash).toBe(latest);
  });

  // A record the runner dead-letters never reaches the profiles' handler: as its partition's last, it must
  // still count as read, or every profile would be read from Redis until the next record on that partition.
  it("should catch up when a partition's last record is dead-lettered", async () => {
    const [tenantsTopic, dlq] = topics;
    const producer = kafka.producer();
    await producer.connect();
    try {
      await producer.send({
        topic: tenantsTopic,
        messages: [
          { key: 't1', value: JSON.stringify(tenantRecord('t1')), partition: 0 },
          { key: 't2', value: '{"not": "closed"', partition: 0 },
          { key: 't3', value: JSON.stringify(tenantRecord('t3')), partition: 1 },
        ],
      });
    } finally {
      await producer.disconnect();
    }
    const profiles = createProfileCache({
      tenants: createTenantStore(redis.client, redis.prefix),
      logger: silentLogger,
    });
    await startReader(profiles, tenantsSubscription(tenantsTopic, profiles));

    const letters = await readDeadLetters(kafka, dlq, 1);
    expect(letters.map((letter) => [letter.key, letter.error.code])).toEqual([['t2', 'MESSAGE_NOT_JSON']]);
    await waitFor(() => profiles.caughtUp(), { timeoutMs: 30_000 });
    expect(profiles.size()).toBe(2);
  });
});
