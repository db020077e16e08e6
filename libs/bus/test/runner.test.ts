import type { Kafka } from 'kafkajs';
import { createConsumerRunner, type ConsumerRunnerOptions, type Publisher } from '@urs/bus';
import { silentLogger } from '@urs/logging';
import { Registry } from '@urs/telemetry';

// Enough of KafkaJS for building a runner (nothing connects).
const kafka = {
  consumer: () => ({ events: { GROUP_JOIN: 'join', CRASH: 'crash' }, on: () => undefined }),
} as unknown as Kafka;

const options = (extra: Partial<ConsumerRunnerOptions>): ConsumerRunnerOptions => ({
  kafka,
  service: 'test',
  groupId: 'group',
  subscriptions: [],
  publisher: {} as Publisher,
  dlqTopic: 'dlq',
  logger: silentLogger,
  metrics: new Registry({ processMetrics: false }),
  ...extra,
});

describe('createConsumerRunner', () => {
  it('should refuse an unknown ordering, naming the option', () => {
    expect(() => createConsumerRunner(options({ ordering: 'tenant' as 'key' }))).toThrow(
      expect.objectContaining({
        code: 'RUNNER_OPTION_INVALID',
        message: expect.stringMatching(/^ordering must be/),
      }),
    );
  });

  it.each([
    'maxBufferedPerPartition',
    'maxDeferredPerPartition',
    'readPastAfterMs',
    'commitIntervalMs',
    'drainTimeoutMs',
  ] as const)('should refuse %s below 1 with ordering by key, naming the option', (name) => {
    expect(() => createConsumerRunner(options({ ordering: 'key', [name]: 0 }))).toThrow(
      expect.objectContaining({
        code: 'RUNNER_OPTION_INVALID',
        message: `${name} must be an integer >= 1, got 0`,
      }),
    );
  });

  it("should serve each topic's dead-lettered count at 0 before its first dead letter, so that the alert sees it", () => {
    const metrics = new Registry({ processMetrics: false });
    const handler = async () => undefined;
    createConsumerRunner(
      options({
        metrics,
        subscriptions: [
          { topic: 'urs.devices-enriched', contract: 'urs/enriched-batch', handler },
          { topic: 'urs.tenants', contract: 'urs/tenant-record', handler },
        ],
      }),
    );
    const text = metrics.expose();
    expect(text).toMatch(/^urs_messages_total\{outcome="dead-lettered",topic="urs.devices-enriched"\} 0$/m);
    expect(text).toMatch(/^urs_messages_total\{outcome="dead-lettered",topic="urs.tenants"\} 0$/m);
    // Its refused dead letters alike (UrsDeadLetterRefused).
    expect(text).toMatch(
      /^urs_messages_total\{outcome="dead-letter-refused",topic="urs.devices-enriched"\} 0$/m,
    );
    expect(text).toMatch(/^urs_messages_total\{outcome="dead-letter-refused",topic="urs.tenants"\} 0$/m);
  });

  it('should fetch up to 4 MiB of a partition at once unless told otherwise', () => {
    const configs: Array<Record<string, unknown>> = [];
    const recording = {
      consumer: (config: Record<string, unknown>) => {
        configs.push(config);
        return { events: { GROUP_JOIN: 'join', CRASH: 'crash' }, on: () => undefined };
      },
    } as unknown as Kafka;
    createConsumerRunner(options({ kafka: recording }));
    createConsumerRunner(options({ kafka: recording, maxBytesPerPartition: 65_536 }));
    expect(configs.map((config) => config.maxBytesPerPartition)).toEqual([4 * 1024 * 1024, 65_536]);
    expect(configs[0]?.maxBytes).toBe(16 * 1024 * 1024);
    expect(() => createConsumerRunner(options({ maxBytesPerPartition: 0 }))).toThrow(
      'maxBytesPerPartition must be an integer >= 1, got 0',
    );
  });

  it('should build a key-ordered runner with the defaults', () => {
    const runner = createConsumerRunner(options({ ordering: 'key' }));
    expect(runner.state).toBe('created');
    expect(runner.isReady()).toBe(false);
  });
});
