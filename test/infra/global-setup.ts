// Resolves the Kafka broker and the Redis server for the integration and e2e suites, in this order:
//   1. KAFKA_BROKERS / REDIS_URL already in the environment (a developer's or CI's own servers);
//   2. testcontainers, when a Docker engine answers (apache/kafka of the pinned version, KRaft; Redis 7);
//   3. the local stack (`npm run stack:up`: Kafka from Maven Central jars, the local redis-server),
//      started if it is not running and reused if it is;
//   4. otherwise fail, saying what to install.
// The addresses go into process.env, which the jest workers inherit.
// URS_TEST_INFRA=containers|stack skips the choice (default: auto).
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freePort } from '../support/ports';
import { setInfra, type ResolvedInfra } from './infra-state';

/** How long the Docker probe may take before the engine counts as absent, in milliseconds. */
const DOCKER_PROBE_TIMEOUT_MS = 10_000;

const DEFAULT_REDIS_IMAGE = 'redis:7.2-alpine';

export default async function globalSetup(): Promise<void> {
  const env = process.env;
  const wantKafka = !env['KAFKA_BROKERS'];
  const wantRedis = !env['REDIS_URL'];
  if (!wantKafka && !wantRedis) {
    report('environment', env['KAFKA_BROKERS'] ?? '', env['REDIS_URL'] ?? '');
    return;
  }
  const mode = env['URS_TEST_INFRA'] ?? 'auto';
  if (mode !== 'auto' && mode !== 'containers' && mode !== 'stack') {
    throw new Error(`URS_TEST_INFRA must be auto, containers or stack (got "${mode}")`);
  }
  const failures: string[] = [];
  if (mode !== 'stack') {
    const docker = await dockerAnswers();
    if (docker === true) {
      const infra = await startContainers(wantKafka, wantRedis);
      publish(infra);
      report('testcontainers', env['KAFKA_BROKERS'] ?? '', env['REDIS_URL'] ?? '');
      return;
    }
    failures.push(`testcontainers: ${docker}`);
    if (mode === 'containers') throw infraError(failures);
  }
  try {
    publish(await localStack(wantKafka, wantRedis));
    report('local stack', env['KAFKA_BROKERS'] ?? '', env['REDIS_URL'] ?? '');
  } catch (err) {
    failures.push(`local stack: ${err instanceof Error ? err.message : String(err)}`);
    throw infraError(failures);
  }
}

function publish(infra: ResolvedInfra): void {
  if (infra.kafkaBrokers !== undefined) process.env['KAFKA_BROKERS'] = infra.kafkaBrokers;
  if (infra.redisUrl !== undefined) process.env['REDIS_URL'] = infra.redisUrl;
  setInfra(infra);
}

function report(source: string, brokers: string, redisUrl: string): void {
  process.stderr.write(`\ntest infrastructure (${source}): KAFKA_BROKERS=${brokers} REDIS_URL=${redisUrl}\n`);
}

function infraError(failures: string[]): Error {
  return new Error(
    [
      'No Kafka/Redis for the integration and e2e tests:',
      ...failures.map((f) => `  - ${f}`),
      'Do one of:',
      '  - set KAFKA_BROKERS and REDIS_URL to servers you run;',
      '  - start a Docker engine (testcontainers then starts Kafka and Redis);',
      '  - install Java 17+, Maven 3.8+ and redis-server, then `npm run stack:up`.',
    ].join('\n'),
  );
}

/** true when a container runtime answers, else the reason it does not. */
async function dockerAnswers(): Promise<true | string> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('no answer within 10 s')), DOCKER_PROBE_TIMEOUT_MS);
    });
    await Promise.race([getContainerRuntimeClient(), timeout]);
    return true;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  } finally {
    clearTimeout(timer);
  }
}

/** The Kafka version the local stack runs (deploy/kafka/pom.xml), so both ways test the same broker. */
function pinnedKafkaVersion(): string {
  const pom = fs.readFileSync(path.join(__dirname, '..', '..', 'deploy', 'kafka', 'pom.xml'), 'utf8');
  const version = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(pom)?.[1];
  if (version === undefined) throw new Error('deploy/kafka/pom.xml declares no kafka.version');
  return version;
}

async function startContainers(wantKafka: boolean, wantRedis: boolean): Promise<ResolvedInfra> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const infra: ResolvedInfra = { source: 'containers', containers: [] };
  if (wantKafka) {
    // Apache's own image of the pinned version, configured like the local stack. The advertised
    // listener must name the host port before the container starts, so that port is chosen up front.
    const port = await freePort();
    const image = process.env['URS_TEST_KAFKA_IMAGE'] ?? `apache/kafka:${pinnedKafkaVersion()}`;
    const kafka = await new GenericContainer(image)
      .withEnvironment({
        KAFKA_NODE_ID: '1',
        KAFKA_PROCESS_ROLES: 'broker,controller',
        KAFKA_CONTROLLER_QUORUM_VOTERS: '1@localhost:9093',
        KAFKA_LISTENERS: 'PLAINTEXT://:9092,CONTROLLER://:9093,HOST://:9094',
        KAFKA_ADVERTISED_LISTENERS: `PLAINTEXT://localhost:9092,HOST://127.0.0.1:${port}`,
        KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,HOST:PLAINTEXT',
        KAFKA_CONTROLLER_LISTENER_NAMES: 'CONTROLLER',
        KAFKA_INTER_BROKER_LISTENER_NAME: 'PLAINTEXT',
        KAFKA_AUTO_CREATE_TOPICS_ENABLE: 'false',
        KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: '1',
        KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS: '1',
        KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: '1',
        KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: '1',
        KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR: '1',
        KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR: '1',
        KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: '0',
        KAFKA_HEAP_OPTS: '-Xms256m -Xmx512m',
      })
      .withExposedPorts({ container: 9094, host: port })
      .withWaitStrategy(Wait.forLogMessage(/Kafka Server started/))
      .withStartupTimeout(120_000)
      .start();
    infra.containers.push(kafka);
    infra.kafkaBrokers = `127.0.0.1:${port}`;
  }
  if (wantRedis) {
    const redis = await new GenericContainer(process.env['URS_TEST_REDIS_IMAGE'] ?? DEFAULT_REDIS_IMAGE)
      .withExposedPorts(6379)
      .withWaitStrategy(Wait.forLogMessage('Ready to accept connections'))
      .start();
    infra.containers.push(redis);
    infra.redisUrl = `redis://${redis.getHost()}:${redis.getMappedPort(6379)}`;
  }
  return infra;
}

/** Runs `deploy/stack/stack.mjs up --json` (it reuses a running stack) and reads the addresses it prints. */
function localStack(wantKafka: boolean, wantRedis: boolean): Promise<ResolvedInfra> {
  const script = path.join(__dirname, '..', '..', 'deploy', 'stack', 'stack.mjs');
  const args = [script, 'up', '--json'];
  if (!wantKafka) args.push('--only=redis');
  if (!wantRedis) args.push('--only=kafka');
  return new Promise((resolve, reject) => {
    const child = execFile(
      process.execPath,
      args,
      { env: process.env, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          // The stack prints its reason as `stack: <message>` (possibly followed by log lines).
          const reason = /^stack: [\s\S]*$/m.exec(stderr)?.[0].trim() ?? err.message;
          reject(new Error(`\`node ${path.relative(process.cwd(), script)} up\` failed: ${reason}`));
          return;
        }
        const line = stdout.trim().split('\n').pop() ?? '';
        try {
          const parsed = JSON.parse(line) as { kafkaBrokers: string; redisUrl: string };
          resolve({
            source: 'stack',
            containers: [],
            ...(wantKafka ? { kafkaBrokers: parsed.kafkaBrokers } : {}),
            ...(wantRedis ? { redisUrl: parsed.redisUrl } : {}),
          });
        } catch {
          reject(new Error(`${script} up printed no JSON result: ${line}`));
        }
      },
    );
    child.stderr?.on('data', (chunk: Buffer) => process.stderr.write(chunk));
  });
}
