import type { Kafka } from 'kafkajs';
import { createConsumerRunner, createPublisher, type ConsumerRunner, type Publisher } from '@urs/bus';
import type { DeviceBatch, EnrichedBatch } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createBulkVulnerabilityCache, createCycleStore, createTenantStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import {
  createTestKafka,
  createTestRedis,
  createUniqueTopics,
  deleteTopics,
  tenantRecord,
  uniqueId,
  waitFor,
  type TestRedis,
} from '@urs/testkit';
import { createEnrichHandler } from '../src/handler';
import type { SourceProvider } from '../src/sources';

function deviceBatch(tenantId: string, devices: number): DeviceBatch {
  return {
    schemaVersion: 1,
    tenantId,
    cycleId: `${tenantId}-cycle-1`,
    cycleStartedAt: new Date().toISOString(),
    batchIndex: 0,
    lastBatch: true,
    totalBatches: 1,
    totalDevices: devices,
    vulnerabilityMode: 'per-device',
    cvssThreshold: 9,
    devices: Array.from({ length: devices }, (_, i) => ({ id: `${tenantId}-d${i}` })),
  };
}

describe('createEnrichHandler under the consumer runner', () => {
  let kafka: Kafka;
  let topics: [string, string, string];
  let redis: TestRedis;
  let publisher: Publisher;
  let runner: ConsumerRunner | undefined;

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    topics = (await createUniqueTopics(kafka, [
      { prefix: 'device-batches', numPartitions: 1 },
      { prefix: 'devices-enriched' },
      { prefix: 'dlq' },
    ])) as [string, string, string];
    redis = createTestRedis();
    publisher = await createPublisher(kafka);
  });

  afterEach(async () => {
    await runner?.close();
    await publisher.close();
    await redis.close();
    await deleteTopics(kafka, topics);
  });

  it("should enrich tenant B's batch while tenant A's batch in the same partition waits on its quota", async () => {
    const [batches, enrichedTopic, dlq] = topics;
    const tenants = createTenantStore(redis.client, redis.prefix);
    await tenants.put(tenantRecord('tenant-a'));
    await tenants.put(tenantRecord('tenant-b'));

    // Microsoft stand-in: every call of tenant A waits (as on an exhausted quota) until released.
    let releaseA!: () => void;
    const quotaOfA = new Promise<void>((resolve) => (releaseA = resolve));
    const calls: string[] = [];
    const sources: SourceProvider = {
      forTenant: (record) => ({
        machineVulnerabilities: async (machineId) => {
          calls.push(machineId);
          if (record.tenantId === 'tenant-a') await quotaOfA;
          return [{ id: `CVE-2026-${machineId.length}`, cvssV3: 9.8 }];
        },
        bulkVulnerabilities: async () => undefined,
      }),
      close: () => undefined,
    };
    const metrics = new Registry({ processMetrics: false });
    const handler = createEnrichHandler({
      tenants,
      sources,
      bulkCache: createBulkVulnerabilityCache(redis.client, redis.prefix, 60_000),
      cycles: createCycleStore(redis.client, redis.prefix),
      publisher,
      topic: enrichedTopic,
      logger: silentLogger,
      metrics,
      concurrency: 2,
      bulkWaitMs: 1_000,
      bulkClaimMs: 1_000,
    });
    runner = createConsumerRunner({
      kafka,
      service: 'vuln-fetcher',
      groupId: uniqueId('vuln-fetcher'),
      subscriptions: [{ topic: batches, contract: 'urs/device-batch', handler }],
      publisher,
      dlqTopic: dlq,
      logger: silentLogger,
      metrics,
      ordering: 'key',
    });
    await runner.start();

    const enriched: EnrichedBatch[] = [];
    const reader = kafka.consumer({ groupId: uniqueId('enriched-reader'), maxWaitTimeInMs: 500 });
    await reader.connect();
    await reader.subscribe({ topic: enrichedTopic, fromBeginning: true });
    await reader.run({
      eachMessage: async ({ message }) => {
        enriched.push(JSON.parse(message.value?.toString('utf8') ?? 'null') as EnrichedBatch);
      },
    });
    try {
      // One partition: A's batch first, B's behind it.
      await publisher.send(batches, 'urs/device-batch', [
        { key: 'tenant-a', value: deviceBatch('tenant-a', 4) },
        { key: 'tenant-b', value: deviceBatch('tenant-b', 3) },
      ]);

      await waitFor(() => enriched.some((batch) => batch.tenantId === 'tenant-b'), {
        timeoutMs: 30_000,
        description: "tenant B's enriched batch",
      });
      expect(enriched.map((batch) => batch.tenantId)).toEqual(['tenant-b']);
      expect(calls.filter((id) => id.startsWith('tenant-a'))).toHaveLength(2);
      expect(enriched[0]?.devices.map((device) => device.vulnerabilities?.criticalCveCount)).toEqual([
        1, 1, 1,
      ]);

      releaseA();
      await waitFor(() => enriched.some((batch) => batch.tenantId === 'tenant-a'), { timeoutMs: 15_000 });
      const a = enriched.find((batch) => batch.tenantId === 'tenant-a');
      expect(a?.devices.map((device) => device.machine.id)).toEqual([
        'tenant-a-d0',
        'tenant-a-d1',
        'tenant-a-d2',
        'tenant-a-d3',
      ]);
    } finally {
      // A failed expectation must not leave A's batch holding the runner's close.
      releaseA();
      await reader.disconnect();
    }
  });
});
