import { randomUUID } from 'node:crypto';
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
  api,
  freePort,
  health,
  notReady,
  secretKey,
  spawnService,
  type ServiceProcess,
  type Stage,
} from '../../services/poller/test/support/services';
import { buildServices } from '../../services/poller/test/support/stack';

const TOKEN = 'token-of-the-kafka-away-test';

const registration = () => ({
  enabled: true,
  azureTenantId: randomUUID(),
  clientId: randomUUID(),
  clientSecret: `S3cr3t~${randomUUID()}`,
  pollIntervalMinutes: 60,
});

const REBUILD_RETRYING =
  '"message":"rebuilding the tenants from urs.tenants failed; retrying until it succeeds"';

// Every stage started while its broker is down (an outage at 3 a.m., a broker restarting with the pods):
// before, each exited 1 after KafkaJS's retries (~1 min) and was restarted in a loop; the registrar's first
// rebuild of Redis from urs.tenants (and the topics before it) failed its start the same way. One broker
// and one wait past those retries serve every stage: the tests run in order.
describe('every stage: Kafka away at start', () => {
  const redis = createTestRedis(uniqueId('kafka-away'));
  const topicPrefix = `${uniqueId('ka')}.`;
  let broker: PrivateKafka;
  const started: ServiceProcess[] = [];
  // One key for every stage, as in production: a stage holding another key under the same key id refuses.
  const key = secretKey();

  interface Started {
    stage: ServiceProcess;
    port: number;
    /** The registrar's REST API. */
    rest: string;
  }

  async function start(stage: Stage): Promise<Started> {
    const [port, httpPort] = [await freePort(), await freePort()];
    const process = spawnService(stage, {
      KAFKA_BROKERS: broker.brokers.join(','),
      REDIS_URL: testInfra().redisUrl,
      URS_REDIS_PREFIX: redis.prefix,
      URS_TOPIC_PREFIX: topicPrefix,
      URS_METRICS_PORT: String(port),
      URS_SECRET_KEY: key,
      URS_SHUTDOWN_TIMEOUT_MS: '15000',
      URS_LOG_LEVEL: 'info',
      ...(stage === 'registrar' ? { URS_HTTP_PORT: String(httpPort), URS_API_TOKENS: TOKEN } : {}),
    });
    started.push(process);
    return { stage: process, port, rest: `http://127.0.0.1:${httpPort}` };
  }

  let registrar: Started;
  let poller: Started;
  let fetcher: Started;
  let scorer: Started;
  let publisher: Started;

  beforeAll(async () => {
    buildServices(['registrar', 'poller', 'vuln-fetcher', 'scorer', 'publisher']);
    broker = await startPrivateKafka();
    await broker.stop();
  }, 180_000);

  afterAll(async () => {
    await Promise.all(started.map((stage) => stage.kill()));
    await broker?.close();
    await redis.close();
  });

  it('the registrar should stop cleanly (exit 0) within its stop budget while it waits for Kafka', async () => {
    const { stage, port } = await start('registrar');
    await notReady(stage, port);
    const asked = Date.now();
    await stage.stop(20_000);
    expect(stage.process.exitCode).toBe(0);
    expect(Date.now() - asked).toBeLessThan(15_000);
  }, 60_000);

  it('every stage should answer /healthz, and /readyz 503 naming Kafka, while it waits', async () => {
    [registrar, poller, fetcher, scorer, publisher] = (await Promise.all(
      (['registrar', 'poller', 'vuln-fetcher', 'scorer', 'publisher'] as const).map(start),
    )) as [Started, Started, Started, Started, Started];
    for (const { stage, port } of [poller, fetcher, scorer, publisher]) {
      expect((await notReady(stage, port)).body).toEqual({
        status: 'not-ready',
        reason: expect.stringMatching(/waiting for Kafka/),
      });
      expect((await health(port, '/healthz'))?.status).toBe(200);
    }
    const waiting = await notReady(registrar.stage, registrar.port);
    expect(waiting.body).toEqual({ status: 'not-ready', reason: expect.stringMatching(/Kafka/) });
    expect((await health(registrar.port, '/healthz'))?.status).toBe(200);
    expect(await health(registrar.port, '/readyz/api')).toEqual({
      status: 503,
      body: { status: 'not-ready', reason: expect.stringMatching(/Kafka/) },
    });
  }, 60_000);

  it('the registrar should answer writes and reads 503 naming Kafka at once, not hold them until Kafka answers', async () => {
    // The REST port opens while Kafka is away.
    const write = await waitFor(
      () =>
        api(registrar.rest, TOKEN, 'PUT', '/v1/tenants/away-1/defender', registration()).catch(
          () => undefined,
        ),
      { timeoutMs: 30_000, description: 'the REST port answering' },
    );
    expect(write.status).toBe(503);
    expect(write.body).toEqual({ error: { code: 'NOT_READY', message: expect.stringMatching(/Kafka/) } });
    const read = await api(registrar.rest, TOKEN, 'GET', '/v1/tenants/away-1/devices');
    expect(read.status).toBe(503);
  }, 60_000);

  it('a stage should stop cleanly (exit 0) within its stop budget while it waits for Kafka', async () => {
    // The scorer's profile group, never joined, is left be.
    const asked = Date.now();
    await scorer.stage.stop(20_000);
    expect(scorer.stage.process.exitCode).toBe(0);
    expect(Date.now() - asked).toBeLessThan(15_000);
  }, 60_000);

  it('every stage should still be waiting past KafkaJS’s own retries (~1 min), which used to end the start with exit 1', async () => {
    await new Promise((resolve) => setTimeout(resolve, 70_000));
    for (const { stage, port } of [registrar, poller, fetcher, publisher]) {
      expect(stage.process.exitCode).toBeNull();
      expect((await health(port, '/readyz'))?.status).toBe(503);
    }
    // One warning for the outage, not one per try.
    expect(
      registrar.stage.lines.filter((line) => line.includes(REBUILD_RETRYING)).length,
    ).toBeLessThanOrEqual(1);
  }, 120_000);

  it('every stage should be ready and consume once the broker is back', async () => {
    await broker.start();
    for (const { stage, port } of [registrar, poller, fetcher, publisher]) {
      await waitFor(async () => (await health(port, '/readyz'))?.status === 200, {
        timeoutMs: 90_000,
        description: `${stage.name} /readyz answering 200 once the broker is back`,
      });
    }
    for (const { stage } of [poller, fetcher, publisher]) {
      // /readyz may answer 200 a moment before the line is logged and read.
      await stage.waitForLine((line) => line.includes('"message":"started"'));
      await stage.stop();
      expect(stage.process.exitCode).toBe(0);
    }
  }, 200_000);

  it('the registrar should take registrations once the broker is back, and answer reads from Redis when it is away again', async () => {
    const { rest, port } = registrar;
    const secret = registration();
    const created = await api(rest, TOKEN, 'PUT', '/v1/tenants/away-1/defender', secret);
    expect(created.status).toBe(201);
    expect(created.text).not.toContain(secret.clientSecret);
    expect((await api(rest, TOKEN, 'GET', '/v1/tenants/away-1/defender')).body.tenantId).toBe('away-1');
    expect((await health(port, '/readyz/api'))?.status).toBe(200);

    // Kafka away again, once the tenants were rebuilt: the registrar is not ready (its consumer lost the
    // broker), but its API still answers from Redis, so /readyz/api keeps it in its Service.
    await broker.stop();
    await notReady(registrar.stage, port);
    expect(await health(port, '/readyz/api')).toEqual({ status: 200, body: { status: 'ready' } });
    const whileAway = await api(rest, TOKEN, 'GET', '/v1/tenants/away-1/defender');
    expect([whileAway.status, whileAway.body.tenantId]).toEqual([200, 'away-1']);
    // A write needs Kafka: its produce gives up after the publisher's few retries and the write is answered
    // 503 UNAVAILABLE (to retry), nothing stored, instead of hanging a minute past a proxy's timeout.
    const writeAway = await api(rest, TOKEN, 'PUT', '/v1/tenants/away-2/defender', registration());
    expect(writeAway).toMatchObject({ status: 503, body: { error: { code: 'UNAVAILABLE' } } });
    expect((await api(rest, TOKEN, 'GET', '/v1/tenants/away-2/defender')).status).toBe(404);
    await broker.start();

    expect(registrar.stage.lines.join('\n')).not.toContain(secret.clientSecret);
    await registrar.stage.stop();
    expect(registrar.stage.process.exitCode).toBe(0);
  }, 200_000);
});
