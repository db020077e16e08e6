import {
  createTestRedis,
  startPrivateKafka,
  testInfra,
  uniqueId,
  waitFor,
  type PrivateKafka,
} from '@urs/testkit';
// The process harness of the poller's and the registrar's end-to-end suites.
import {
  freePort,
  health,
  notReady,
  secretKey,
  spawnService,
  type ServiceProcess,
} from '../../services/poller/test/support/services';
import { buildServices } from '../../services/poller/test/support/stack';

type Stage = 'poller' | 'vuln-fetcher' | 'scorer' | 'publisher';

// The stages after the registrar, started while their broker is down (an outage at 3 a.m., a broker restarting with the
// pods): before, each exited 1 after KafkaJS's retries (~1 min) and was restarted in a loop.
describe('poller, vuln-fetcher, scorer, publisher: Kafka away at start', () => {
  const redis = createTestRedis(uniqueId('kafka-away-stages'));
  const topicPrefix = `${uniqueId('kas')}.`;
  let broker: PrivateKafka;
  const started: ServiceProcess[] = [];

  async function start(stage: Stage): Promise<{ stage: ServiceProcess; port: number }> {
    const port = await freePort();
    const process = spawnService(stage, {
      KAFKA_BROKERS: broker.brokers.join(','),
      REDIS_URL: testInfra().redisUrl,
      URS_REDIS_PREFIX: redis.prefix,
      URS_TOPIC_PREFIX: topicPrefix,
      URS_METRICS_PORT: String(port),
      URS_SECRET_KEY: secretKey(),
      URS_SHUTDOWN_TIMEOUT_MS: '15000',
      URS_LOG_LEVEL: 'info',
    });
    started.push(process);
    return { stage: process, port };
  }

  beforeAll(async () => {
    buildServices();
    broker = await startPrivateKafka();
    await broker.stop();
  }, 180_000);

  afterAll(async () => {
    await Promise.all(started.map((stage) => stage.kill()));
    await broker?.close();
    await redis.close();
  });

  it('should wait for Kafka, ready 503 naming it, stop cleanly meanwhile, and consume once it is back', async () => {
    const stages = await Promise.all((['poller', 'vuln-fetcher', 'scorer', 'publisher'] as const).map(start));
    for (const { stage, port } of stages) {
      expect((await notReady(stage, port)).body).toEqual({
        status: 'not-ready',
        reason: expect.stringMatching(/waiting for Kafka/),
      });
      expect((await health(port, '/healthz'))?.status).toBe(200);
    }

    // A stop while waiting: exit 0 within the stop budget (the scorer's profile group, never joined, is left be).
    type Started = (typeof stages)[0];
    const [poller, fetcher, scorer, publisher] = stages as [Started, Started, Started, Started];
    const asked = Date.now();
    await scorer.stage.stop(20_000);
    expect(scorer.stage.process.exitCode).toBe(0);
    expect(Date.now() - asked).toBeLessThan(15_000);

    // Past KafkaJS's own retries (~1 min), which used to end the start with exit 1.
    await new Promise((resolve) => setTimeout(resolve, 65_000));
    for (const { stage, port } of [poller, fetcher, publisher]) {
      expect(stage.process.exitCode).toBeNull();
      expect((await health(port, '/readyz'))?.status).toBe(503);
    }

    await broker.start();
    for (const { stage, port } of [poller, fetcher, publisher]) {
      await waitFor(async () => (await health(port, '/readyz'))?.status === 200, {
        timeoutMs: 90_000,
        description: `${stage.name} /readyz answering 200 once the broker is back`,
      });
      expect(stage.lines.some((line) => line.includes('"message":"started"'))).toBe(true);
      await stage.stop();
      expect(stage.process.exitCode).toBe(0);
    }
  }, 300_000);
});
