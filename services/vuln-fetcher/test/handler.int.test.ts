import type { Consumer, Kafka } from 'kafkajs';
import { createConsumerRunner, createPublisher, type ConsumerRunner, type Publisher } from '@urs/bus';
import type { DeviceBatch, EnrichedBatch } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import {
  createAnsweredCalls,
  createBulkVulnerabilityCache,
  createCycleStore,
  createTenantStore,
} from '@urs/store';
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

/** The batches of a tenant's bulk cycle, `batches` of two devices each. */
function bulkCycle(tenantId: string, batches: number, cycleStartedAt: string): DeviceBatch[] {
  return Array.from({ length: batches }, (_, index) => ({
    schemaVersion: 1 as const,
    tenantId,
    cycleId: `${tenantId}-cycle-1`,
    cycleStartedAt,
    batchIndex: index,
    lastBatch: index === batches - 1,
    ...(index === batches - 1 ? { totalBatches: batches, totalDevices: 2 * batches } : {}),
    vulnerabilityMode: 'bulk' as const,
    cvssThreshold: 9,
    devices: [{ id: `${tenantId}-d${2 * index}` }, { id: `${tenantId}-d${2 * index + 1}` }],
  }));
}

describe('createEnrichHandler under the consumer runner', () => {
  let kafka: Kafka;
  let topics: [string, string, string];
  let redis: TestRedis;
  let publisher: Publisher;
  let runner: ConsumerRunner | undefined;
  let reader: Consumer | undefined;

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
    await reader?.disconnect();
    reader = undefined;
    await publisher.close();
    await redis.close();
    await deleteTopics(kafka, topics);
  });

  /**
   * Registers the tenants, runs the enrich handler over `sources` under the consumer runner (ordering by
   * tenant, as the vuln-fetcher does) and reads what it produces into `enriched`.
   */
  async function enrichWith(
    tenantIds: string[],
    sources: SourceProvider,
    options: { bulkWaitMs?: number; maxBufferedPerPartition?: number; readPastAfterMs?: number } = {},
  ): Promise<EnrichedBatch[]> {
    const [batches, enrichedTopic, dlq] = topics;
    const tenants = createTenantStore(redis.client, redis.prefix);
    for (const tenantId of tenantIds) await tenants.put(tenantRecord(tenantId));
    const metrics = new Registry({ processMetrics: false });
    const handler = createEnrichHandler({
      tenants,
      sources,
      bulkCache: createBulkVulnerabilityCache(redis.client, redis.prefix, 60_000),
      answers: createAnsweredCalls(redis.client, redis.prefix),
      cycles: createCycleStore(redis.client, redis.prefix),
      publisher,
      topic: enrichedTopic,
      logger: silentLogger,
      metrics,
      concurrency: 2,
      bulkWaitMs: options.bulkWaitMs ?? 1_000,
      bulkClaimMs: 1_000,
      bulkPollMs: 20,
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
      ...(options.maxBufferedPerPartition
        ? { maxBufferedPerPartition: options.maxBufferedPerPartition }
        : {}),
      ...(options.readPastAfterMs ? { readPastAfterMs: options.readPastAfterMs } : {}),
    });
    await runner.start();

    const enriched: EnrichedBatch[] = [];
    reader = kafka.consumer({ groupId: uniqueId('enriched-reader'), maxWaitTimeInMs: 500 });
    await reader.connect();
    await reader.subscribe({ topic: enrichedTopic, fromBeginning: true });
    await reader.run({
      eachMessage: async ({ message }) => {
        enriched.push(JSON.parse(message.value?.toString('utf8') ?? 'null') as EnrichedBatch);
      },
    });
    return enriched;
  }

  it("should enrich tenant B's batch while tenant A's batch in the same partition waits on its quota", async () => {
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
      forget: () => undefined,
      close: () => undefined,
    };
    const enriched = await enrichWith(['tenant-a', 'tenant-b'], sources);
    try {
      // One partition: A's batch first, B's behind it.
      await publisher.send(topics[0], 'urs/device-batch', [
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
    }
  });

  it("should enrich tenant B's batch while more of bulk tenant A's batches than a partition buffers wait for A's export, once the partition stayed full readPastAfterMs", async () => {
    // Microsoft stand-in: A's bulk export answers only once released (a first bulk cycle reads it first, so
    // every batch of the cycle waits for it); B's per-device calls answer at once.
    let releaseA!: () => void;
    const exportOfA = new Promise<void>((resolve) => (releaseA = resolve));
    const sources: SourceProvider = {
      forTenant: () => ({
        machineVulnerabilities: async () => [{ id: 'CVE-2026-0001', cvssV3: 9.8 }],
        bulkVulnerabilities: async (onRow) => {
          await exportOfA;
          onRow('tenant-a-d0', { id: 'CVE-2026-0002', cvssV3: 9.9 });
        },
      }),
      forget: () => undefined,
      close: () => undefined,
    };
    // Buffers of 4 batches a partition, read past once full for 200 ms, and A's cycle of 6 batches ahead of B's
    // in the one partition.
    const enriched = await enrichWith(['tenant-a', 'tenant-b'], sources, {
      bulkWaitMs: 60_000,
      maxBufferedPerPartition: 4,
      readPastAfterMs: 200,
    });
    const cycleOfA = bulkCycle('tenant-a', 6, new Date().toISOString());
    try {
      await publisher.send(topics[0], 'urs/device-batch', [
        ...cycleOfA.map((batch) => ({ key: 'tenant-a', value: batch })),
        { key: 'tenant-b', value: deviceBatch('tenant-b', 3) },
      ]);
      await waitFor(() => enriched.some((batch) => batch.tenantId === 'tenant-b'), {
        timeoutMs: 10_000,
        description: "tenant B's enriched batch while A's export waits",
      });
      expect(enriched.map((batch) => batch.tenantId)).toEqual(['tenant-b']);
    } finally {
      releaseA();
    }
    await waitFor(() => enriched.filter((batch) => batch.tenantId === 'tenant-a').length === 6, {
      timeoutMs: 15_000,
      description: "A's six enriched batches",
    });
    // Each of A's batches once (two of a tenant run at once, so they may finish out of order), from the export.
    const ofA = enriched.filter((batch) => batch.tenantId === 'tenant-a');
    expect(ofA.map((batch) => batch.batchIndex).sort()).toEqual([0, 1, 2, 3, 4, 5]);
    const d0 = ofA.find((batch) => batch.batchIndex === 0)?.devices[0];
    expect(d0?.vulnerabilities?.criticalCveCount).toBe(1);
  });
});
