import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Consumer, Kafka } from 'kafkajs';
import { startSimulator, type Simulator } from '@urs/simulator';
import {
  createTestKafka,
  createTestRedis,
  deleteTopics,
  testInfra,
  uniqueId,
  type TestRedis,
} from '@urs/testkit';
import { freePort, secretKey, spawnService, type ServiceProcess, type Stage } from './services';

const ROOT = join(__dirname, '..', '..', '..', '..');

/** The pollers' URS_POLL_RECHECK_MS: how long one waits before it tries again a tenant another one holds. */
export const POLL_RECHECK_MS = 200;

/**
 * Builds the services (by default the registrar and the poller; incremental: quick when nothing changed), so
 * the processes run the current code.
 */
export function buildServices(stages: readonly Stage[] = ['registrar', 'poller']): void {
  execFileSync(
    process.execPath,
    [
      join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
      '-b',
      ...stages.map((stage) => `services/${stage}`),
    ],
    { cwd: ROOT, stdio: 'pipe' },
  );
}

export interface ReceivedMessage {
  topic: string;
  key: string | null;
  /** Raw value text (null for a tombstone). */
  text: string | null;
  /** Each header's value as text (several values of one name joined by newlines). */
  headers: Record<string, string>;
  /** Broker timestamp, ms. */
  timestamp: number;
  receivedAt: number;
}

/** A consumer of every topic of the test's prefix, from the beginning, keeping each message's raw text. */
export async function collectTopics(
  kafka: Kafka,
  topics: string[],
): Promise<{ messages: ReceivedMessage[]; close(): Promise<void> }> {
  const messages: ReceivedMessage[] = [];
  const consumer: Consumer = kafka.consumer({ groupId: uniqueId('collect'), maxWaitTimeInMs: 100 });
  await consumer.connect();
  for (const topic of topics) await consumer.subscribe({ topic, fromBeginning: true });
  let joined = false;
  consumer.on(consumer.events.GROUP_JOIN, () => {
    joined = true;
  });
  await consumer.run({
    eachMessage: async ({ topic, message }) => {
      messages.push({
        topic,
        key: message.key?.toString('utf8') ?? null,
        text: message.value === null ? null : message.value.toString('utf8'),
        headers: Object.fromEntries(
          Object.entries(message.headers ?? {}).map(([name, value]) => [
            name,
            [value ?? []]
              .flat()
              .map((part) => part.toString())
              .join('\n'),
          ]),
        ),
        timestamp: Number(message.timestamp),
        receivedAt: Date.now(),
      });
    },
  });
  const started = Date.now();
  while (!joined && Date.now() - started < 30_000) await new Promise((resolve) => setTimeout(resolve, 50));
  return { messages, close: () => consumer.disconnect() };
}

/** The simulator, a unique topic prefix and Redis prefix, and the env every service process gets. */
export interface TestStack {
  sim: Simulator;
  redis: TestRedis;
  kafka: Kafka;
  topicPrefix: string;
  topic(name: string): string;
  apiToken: string;
  env(extra?: Record<string, string>): Record<string, string>;
  start(name: 'registrar' | 'poller', extra?: Record<string, string>): Promise<ServiceProcess>;
  processes: ServiceProcess[];
  close(): Promise<void>;
}

export async function createTestStack(options: {
  intervalUnitMs: number;
  leaseMs: number;
}): Promise<TestStack> {
  const sim = await startSimulator({ quotas: true });
  const redis = createTestRedis(uniqueId('poll'));
  const kafka = createTestKafka();
  const topicPrefix = `${uniqueId('pf')}.`;
  const apiToken = `token-${secretKey()}`;
  const key = secretKey();
  const infra = testInfra();
  const processes: ServiceProcess[] = [];
  const env = (extra: Record<string, string> = {}): Record<string, string> => ({
    KAFKA_BROKERS: infra.kafkaBrokers.join(','),
    REDIS_URL: infra.redisUrl,
    URS_TOPIC_PREFIX: topicPrefix,
    URS_TOPIC_PARTITIONS: '2',
    URS_REDIS_PREFIX: redis.prefix,
    URS_METRICS_PORT: '0',
    URS_SECRET_KEY: key,
    URS_API_TOKENS: apiToken,
    URS_LOG_LEVEL: 'debug',
    NODE_EXTRA_CA_CERTS: sim.caFile,
    URS_DEFENDER_AUTHORITY_HOST: sim.baseUrl,
    URS_DEFENDER_API_BASE: sim.baseUrl,
    URS_POLL_INTERVAL_UNIT_MS: String(options.intervalUnitMs),
    URS_POLL_LEASE_MS: String(options.leaseMs),
    URS_POLL_TICK_MS: '50',
    URS_POLL_RECHECK_MS: String(POLL_RECHECK_MS),
    URS_REBUILD_CHECK_MS: '300',
    URS_SHUTDOWN_TIMEOUT_MS: '8000',
    ...extra,
  });
  return {
    sim,
    redis,
    kafka,
    topicPrefix,
    topic: (name) => `${topicPrefix}${name}`,
    apiToken,
    env,
    processes,
    async start(name, extra = {}) {
      const port: Record<string, string> =
        name === 'registrar' ? { URS_HTTP_PORT: String(await freePort()) } : {};
      const child = spawnService(name, env({ ...port, ...extra }));
      processes.push(child);
      await child.waitForLine((line) => line.includes('"message":"started"'), 60_000);
      return child;
    },
    async close() {
      await Promise.all(processes.map((child) => child.stop()));
      // Kept for diagnosis of a failed run.
      const dir = join(tmpdir(), 'urs-e2e-logs', topicPrefix.replace(/\.$/, ''));
      mkdirSync(dir, { recursive: true });
      processes.forEach((child, index) =>
        writeFileSync(join(dir, `${index}-${child.name}.log`), child.lines.join('\n')),
      );
      const admin = kafka.admin();
      await admin.connect();
      const topics = (await admin.listTopics()).filter((topic) => topic.startsWith(topicPrefix));
      await admin.disconnect();
      await deleteTopics(kafka, topics);
      await redis.close();
      await sim.close();
    },
  };
}

/** The port a service's log says it listens on (`REST listening` / `started`). */
export function portFrom(lines: string[], message: string, field: string): number {
  for (const line of lines) {
    if (!line.includes(`"message":"${message}"`)) continue;
    const value = (JSON.parse(line) as Record<string, unknown>)[field];
    if (typeof value === 'number') return value;
  }
  throw new Error(`no "${message}" line with ${field}`);
}
