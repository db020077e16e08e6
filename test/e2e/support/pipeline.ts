import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Kafka } from 'kafkajs';
import { topicsConfig, type Topics } from '@urs/config';
import type { Simulator } from '@urs/simulator';
import {
  createTestKafka,
  createTestRedis,
  deleteTopics,
  testInfra,
  uniqueId,
  type TestRedis,
} from '@urs/testkit';
import { ServiceGroup, logField, type ServiceName } from './services';
import { TopicWatch } from './watch';

export interface PipelineOptions {
  sim: Simulator;
  /** Extra environment for every service (e.g. URS_POLL_INTERVAL_UNIT_MS). */
  env?: Record<string, string>;
  /** Extra environment per service. */
  serviceEnv?: Partial<Record<ServiceName, Record<string, string>>>;
}

/** The five services over real Kafka and Redis, on topics and keys of their own, with a watch on the topics. */
export class Pipeline {
  readonly topicPrefix = `${uniqueId('e2e')}.`;
  readonly redis: TestRedis = createTestRedis(uniqueId('e2e'));
  readonly apiToken = randomBytes(16).toString('hex');
  readonly kafka: Kafka = createTestKafka();
  readonly topics: Topics;
  readonly services: ServiceGroup;
  readonly watch: TopicWatch;
  apiUrl = '';

  constructor(private readonly options: PipelineOptions) {
    const p = this.topicPrefix;
    // The names the services derive from the same URS_TOPIC_PREFIX.
    this.topics = topicsConfig({ URS_TOPIC_PREFIX: p });
    const infra = testInfra();
    const secretKey = randomBytes(32).toString('base64');
    const common: NodeJS.ProcessEnv = {
      PATH: process.env['PATH'],
      NODE_EXTRA_CA_CERTS: options.sim.caFile,
      KAFKA_BROKERS: infra.kafkaBrokers.join(','),
      REDIS_URL: infra.redisUrl,
      URS_TOPIC_PREFIX: p,
      URS_REDIS_PREFIX: this.redis.prefix,
      URS_TOPIC_PARTITIONS: '3',
      URS_SECRET_KEY: secretKey,
      URS_DEFENDER_AUTHORITY_HOST: options.sim.baseUrl,
      URS_DEFENDER_API_BASE: options.sim.baseUrl,
      URS_METRICS_PORT: '0',
      URS_HTTP_PORT: '0',
      URS_API_TOKENS: this.apiToken,
      URS_SHUTDOWN_TIMEOUT_MS: '15000',
      ...options.env,
    };
    const logDir = mkdtempSync(join(tmpdir(), 'urs-e2e-'));
    this.services = new ServiceGroup((name) => ({ ...common, ...options.serviceEnv?.[name] }), logDir);
    this.watch = new TopicWatch(this.kafka, [
      this.topics.deviceBatches,
      this.topics.devicesEnriched,
      this.topics.deviceScores,
      this.topics.dlq,
      this.topics.vmsRiskScores,
      this.topics.vmsRiskSummary,
    ]);
  }

  /** Starts the registrar first (it creates the topics), then the others, then the watch. */
  async start(): Promise<void> {
    const registrar = await this.services.start('registrar');
    this.apiUrl = `http://127.0.0.1:${String(logField(registrar, 'REST listening', 'httpPort'))}`;
    await Promise.all(
      (['poller', 'vuln-fetcher', 'scorer', 'publisher'] as const).map((name) => this.services.start(name)),
    );
    await this.watch.start();
  }

  // The answers are asserted field by field in the tests; their shapes belong to the registrar.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async api(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
    const response = await fetch(`${this.apiUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.apiToken}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return { status: response.status, body: text === '' ? null : JSON.parse(text) };
  }

  /** Produces raw values to a topic (malformed input). */
  async produceRaw(topic: string, messages: { key: string; value: string }[]): Promise<void> {
    const producer = this.kafka.producer();
    await producer.connect();
    try {
      await producer.send({ topic, messages });
    } finally {
      await producer.disconnect();
    }
  }

  async stop(): Promise<void> {
    await this.services.stopAll();
    await this.watch.stop();
    await deleteTopics(this.kafka, Object.values(this.topics));
    await this.redis.close();
  }
}
