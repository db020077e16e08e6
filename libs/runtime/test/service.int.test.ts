import {
  type ConsumerRunner,
  type ConsumerRunnerOptions,
  type InboundMessage,
  createConsumerRunner,
} from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { UrsError, retryPolicy } from '@urs/resilience';
import { ServiceStoppedError, type ServiceContext, startService } from '@urs/runtime';
import { createTestKafka, deleteTopics, uniqueId, waitFor } from '@urs/testkit';
import { deleteTopicsOf, serviceEnv } from './support';

/** A runner of the service's tenant records, handled by `handler`. */
function tenantsRunner(
  context: ServiceContext,
  handler: (message: InboundMessage<TenantRecord>) => Promise<void>,
  extra: Partial<ConsumerRunnerOptions> = {},
): ConsumerRunner {
  return createConsumerRunner({
    kafka: context.kafka,
    service: 'test-service',
    groupId: uniqueId('group'),
    subscriptions: [
      { topic: context.config.topics.tenants, contract: 'urs/tenant-record', tombstones: true, handler },
    ],
    publisher: context.publisher,
    dlqTopic: context.config.topics.dlq,
    logger: context.logger,
    metrics: context.metrics,
    ...extra,
  });
}

describe('startService', () => {
  it('should create every topic, become ready once its runners joined, and stop cleanly', async () => {
    const prefix = `${uniqueId('svc')}.`;
    const env = serviceEnv(prefix);
    const handled: string[] = [];
    const service = await startService({
      name: 'test-service',
      defaultMetricsPort: 0,
      env,
      setup: async (context) => ({
        runners: [tenantsRunner(context, async (message) => void handled.push(message.key ?? ''))],
      }),
    });
    const kafka = createTestKafka();
    try {
      const admin = kafka.admin();
      await admin.connect();
      const topics = (await admin.listTopics()).filter((topic) => topic.startsWith(prefix)).sort();
      const config = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [{ type: 2, name: `${prefix}vms.risk-scores`, configNames: ['cleanup.policy'] }],
      });
      await admin.disconnect();
      expect(topics).toEqual(
        [
          'urs.device-batches',
          'urs.device-scores',
          'urs.devices-enriched',
          'urs.dlq',
          'urs.registration',
          'urs.tenants',
          'vms.risk-scores',
          'vms.risk-summary',
        ].map((name) => `${prefix}${name}`),
      );
      expect(config.resources[0]?.configEntries[0]?.configValue).toBe('compact');

      const readyz = `http://127.0.0.1:${service.health.port}/readyz`;
      await waitFor(async () => (await fetch(readyz)).status === 200, { timeoutMs: 20_000 });
      await service.context.publisher.send(service.context.config.topics.tenants, 'urs/tenant-record', [
        { key: 'gone', value: null },
      ]);
      await waitFor(() => handled.length === 1, { timeoutMs: 20_000 });
      expect(handled).toEqual(['gone']);
    } finally {
      expect(await service.close()).toBe(true);
      await deleteTopics(kafka, [
        ...[
          'urs.registration',
          'urs.tenants',
          'urs.device-batches',
          'urs.devices-enriched',
          'urs.device-scores',
          'urs.dlq',
          'vms.risk-scores',
          'vms.risk-summary',
        ].map((name) => `${prefix}${name}`),
      ]);
    }
    await expect(fetch(`http://127.0.0.1:${service.health.port}/healthz`)).rejects.toThrow();
  });

  it('should make and describe only the topics the service names, so that ACLs may allow it those alone', async () => {
    const prefix = `${uniqueId('svc')}.`;
    const service = await startService({
      name: 'test-service',
      defaultMetricsPort: 0,
      env: serviceEnv(prefix),
      topics: { tenants: 'read', dlq: 'write' },
      setup: async (context) => ({ runners: [tenantsRunner(context, async () => undefined)] }),
    });
    const kafka = createTestKafka();
    try {
      const admin = kafka.admin();
      await admin.connect();
      const topics = (await admin.listTopics()).filter((topic) => topic.startsWith(prefix)).sort();
      const config = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [{ type: 2, name: `${prefix}urs.tenants`, configNames: ['cleanup.policy'] }],
      });
      await admin.disconnect();
      expect(topics).toEqual([`${prefix}urs.dlq`, `${prefix}urs.tenants`]);
      expect(config.resources[0]?.configEntries[0]?.configValue).toBe('compact');
    } finally {
      expect(await service.close()).toBe(true);
      await deleteTopicsOf(kafka, prefix);
    }
  });

  it('should say it failed when a runner stops consuming for good, and still stop cleanly', async () => {
    const prefix = `${uniqueId('svc')}.`;
    const env = serviceEnv(prefix);
    const service = await startService({
      name: 'test-service',
      defaultMetricsPort: 0,
      env,
      setup: async (context) => ({
        // Below the broker's minimum (6000): it refuses the member, an error KafkaJS does not retry.
        runners: [tenantsRunner(context, async () => undefined, { sessionTimeoutMs: 4_000 })],
      }),
    });
    const kafka = createTestKafka();
    try {
      const error = await Promise.race([
        service.failed,
        new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 30_000).unref()),
      ]);
      expect(error?.message).toMatch(/session timeout/i);
    } finally {
      expect(await service.close()).toBe(true);
      await deleteTopicsOf(kafka, prefix);
    }
  });

  it('should say it failed when a part of its own stops for good, and still stop cleanly', async () => {
    const prefix = `${uniqueId('svc')}.`;
    const env = serviceEnv(prefix);
    const stopped = new Error('reading urs.tenants: Kafka stopped its consumer');
    let stop: (error: Error) => void = () => undefined;
    const service = await startService({
      name: 'test-service',
      defaultMetricsPort: 0,
      env,
      // E.g. the registrar's rebuild of Redis, which reads urs.tenants with a consumer of its own.
      setup: async () => ({ failed: () => new Promise<Error>((resolve) => (stop = resolve)) }),
    });
    const kafka = createTestKafka();
    try {
      stop(stopped);
      const error = await Promise.race([
        service.failed,
        new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 5_000).unref()),
      ]);
      expect(error).toBe(stopped);
    } finally {
      expect(await service.close()).toBe(true);
      await deleteTopicsOf(kafka, prefix);
    }
  });

  it('should leave a message uncommitted and not dead-lettered when stopping interrupts its handler, even with one attempt', async () => {
    const prefix = `${uniqueId('svc')}.`;
    const env = serviceEnv(prefix);
    const groupId = uniqueId('group');
    let handling: string | undefined;
    const service = await startService({
      name: 'test-service',
      defaultMetricsPort: 0,
      env,
      setup: async (context) => ({
        runners: [
          tenantsRunner(
            context,
            // As the vuln-fetcher's handler: its calls give up when the service stops.
            async (message) => {
              handling = message.offset;
              await new Promise((resolve) => context.stopping.addEventListener('abort', resolve));
              throw new UrsError('STOPPING', 'the batch was interrupted; it will be handled again', {
                canRetry: true,
              });
            },
            // One attempt: a failure counted as the message's would dead-letter it at once.
            { groupId, ordering: 'key', retry: retryPolicy({ maxAttempts: 1 }) },
          ),
        ],
      }),
    });
    const { topics } = service.context.config;
    const kafka = createTestKafka();
    try {
      await service.context.publisher.send(topics.tenants, 'urs/tenant-record', [
        { key: 'busy', value: null },
      ]);
      await waitFor(() => handling !== undefined, { timeoutMs: 20_000 });
      expect(service.context.stopping.aborted).toBe(false);
    } finally {
      expect(await service.close()).toBe(true);
    }
    try {
      expect(service.context.stopping.aborted).toBe(true);
      const admin = kafka.admin();
      await admin.connect();
      const dlq = await admin.fetchTopicOffsets(topics.dlq);
      const committed = await admin.fetchOffsets({ groupId, topics: [topics.tenants] });
      await admin.disconnect();
      expect(dlq.map((partition) => partition.high)).toEqual(['0']);
      // Nothing committed past the message (-1: nothing at all): whoever reads the partition next handles it.
      const offset = committed[0]?.partitions[0]?.offset ?? '-1';
      expect(BigInt(offset)).toBeLessThanOrEqual(BigInt(handling ?? '-1'));
    } finally {
      await deleteTopicsOf(kafka, prefix);
    }
  });

  it('should close what a setup it gave up on returns after the stop', async () => {
    const prefix = `${uniqueId('svc')}.`;
    const env = serviceEnv(prefix);
    const stop = new AbortController();
    let finishSetup: () => void = () => undefined;
    let setupStarted = false;
    const closed: string[] = [];
    const starting = startService({
      name: 'test-service',
      defaultMetricsPort: 0,
      env,
      stop: stop.signal,
      // A setup that does not heed the stop (a connect of its own under way), returning a part to close.
      setup: async () => {
        setupStarted = true;
        await new Promise<void>((resolve) => (finishSetup = resolve));
        return { closers: [{ name: 'limiter', close: async () => void closed.push('limiter') }] };
      },
    });
    const kafka = createTestKafka();
    try {
      await waitFor(() => setupStarted, { timeoutMs: 20_000 });
      stop.abort();
      await expect(starting).rejects.toBeInstanceOf(ServiceStoppedError);
      expect(closed).toEqual([]);
      finishSetup();
      await waitFor(() => closed.length > 0, { timeoutMs: 5_000 });
      expect(closed).toEqual(['limiter']);
    } finally {
      await deleteTopicsOf(kafka, prefix);
    }
  });
});
