import { randomUUID } from 'node:crypto';
import {
  createTestRedis,
  startPrivateKafka,
  testInfra,
  uniqueId,
  waitFor,
  type PrivateKafka,
} from '@urs/testkit';
// The process harness is shared with the poller's end-to-end suite.
import {
  api,
  freePort,
  health,
  notReady,
  secretKey,
  spawnService,
  type ServiceProcess,
} from '../../poller/test/support/services';
import { buildServices } from '../../poller/test/support/stack';

const TOKEN = 'token-of-the-kafka-away-test';

const registration = () => ({
  enabled: true,
  azureTenantId: randomUUID(),
  clientId: randomUUID(),
  clientSecret: `S3cr3t~${randomUUID()}`,
  pollIntervalMinutes: 60,
});

// A registrar started while its broker is down (an outage at 3 a.m.): before, the first rebuild of Redis
// from urs.tenants (and the topics before it) failed the start with exit 1 after KafkaJS's retries.
describe('registrar: Kafka away at start', () => {
  const redis = createTestRedis(uniqueId('kafka-away'));
  let broker: PrivateKafka;
  const started: ServiceProcess[] = [];

  async function startRegistrar(): Promise<{ registrar: ServiceProcess; metricsPort: number; rest: string }> {
    const [metricsPort, httpPort] = [await freePort(), await freePort()];
    const registrar = spawnService('registrar', {
      KAFKA_BROKERS: broker.brokers.join(','),
      REDIS_URL: testInfra().redisUrl,
      URS_REDIS_PREFIX: redis.prefix,
      URS_TOPIC_PREFIX: `${uniqueId('ka')}.`,
      URS_METRICS_PORT: String(metricsPort),
      URS_HTTP_PORT: String(httpPort),
      URS_API_TOKENS: TOKEN,
      URS_SECRET_KEY: secretKey(),
      URS_SHUTDOWN_TIMEOUT_MS: '15000',
      URS_LOG_LEVEL: 'info',
    });
    started.push(registrar);
    return { registrar, metricsPort, rest: `http://127.0.0.1:${httpPort}` };
  }

  beforeAll(async () => {
    buildServices();
    broker = await startPrivateKafka();
    await broker.stop();
  }, 180_000);

  afterAll(async () => {
    await Promise.all(started.map((registrar) => registrar.kill()));
    await broker?.close();
    await redis.close();
  });

  it('should stop cleanly (exit 0) within its stop budget while it waits for Kafka', async () => {
    const { registrar, metricsPort } = await startRegistrar();
    await notReady(registrar, metricsPort);
    const asked = Date.now();
    await registrar.stop(20_000);
    expect(registrar.process.exitCode).toBe(0);
    expect(Date.now() - asked).toBeLessThan(15_000);
  }, 60_000);

  it('should serve /healthz, and answer /readyz and writes 503 naming Kafka, until the broker is back', async () => {
    const { registrar, metricsPort, rest } = await startRegistrar();
    const waiting = await notReady(registrar, metricsPort);
    expect(waiting.body).toEqual({ status: 'not-ready', reason: expect.stringMatching(/Kafka/) });
    expect((await health(metricsPort, '/healthz'))?.status).toBe(200);
    expect(await health(metricsPort, '/readyz/api')).toEqual({
      status: 503,
      body: { status: 'not-ready', reason: expect.stringMatching(/Kafka/) },
    });

    // The REST port opens while Kafka is away; a write is answered at once, not held until Kafka answers.
    const write = await waitFor(
      () => api(rest, TOKEN, 'PUT', '/v1/tenants/away-1/defender', registration()).catch(() => undefined),
      { timeoutMs: 30_000, description: 'the REST port answering' },
    );
    expect(write.status).toBe(503);
    expect(write.body).toEqual({ error: { code: 'NOT_READY', message: expect.stringMatching(/Kafka/) } });
    const read = await api(rest, TOKEN, 'GET', '/v1/tenants/away-1/devices');
    expect(read.status).toBe(503);
    // Past KafkaJS's own retries (~1 min), which used to end the start with exit 1.
    await new Promise((resolve) => setTimeout(resolve, 70_000));
    expect(registrar.process.exitCode).toBeNull();
    expect((await health(metricsPort, '/readyz'))?.status).toBe(503);
    // One warning for the outage, not one per try.
    const warnings = registrar.lines.filter((line) =>
      line.includes('"message":"rebuilding the tenants from urs.tenants failed; retrying until it succeeds"'),
    );
    expect(warnings.length).toBeLessThanOrEqual(1);

    await broker.start();
    await waitFor(async () => (await health(metricsPort, '/readyz'))?.status === 200, {
      timeoutMs: 90_000,
      description: '/readyz answering 200 once the broker is back',
    });
    const secret = registration();
    const created = await api(rest, TOKEN, 'PUT', '/v1/tenants/away-1/defender', secret);
    expect(created.status).toBe(201);
    expect(created.text).not.toContain(secret.clientSecret);
    expect((await api(rest, TOKEN, 'GET', '/v1/tenants/away-1/defender')).body.tenantId).toBe('away-1');
    expect((await health(metricsPort, '/readyz/api'))?.status).toBe(200);

    // Kafka away again, once the tenants were rebuilt: the registrar is not ready (its consumer lost the
    // broker), but its API still answers from Redis, so /readyz/api keeps it in its Service.
    await broker.stop();
    await notReady(registrar, metricsPort);
    expect(await health(metricsPort, '/readyz/api')).toEqual({ status: 200, body: { status: 'ready' } });
    const whileAway = await api(rest, TOKEN, 'GET', '/v1/tenants/away-1/defender');
    expect([whileAway.status, whileAway.body.tenantId]).toEqual([200, 'away-1']);
    // A write needs Kafka: its produce gives up after the publisher's few retries and the write is answered
    // 503 UNAVAILABLE (to retry), nothing stored, instead of hanging a minute past a proxy's timeout.
    const writeAway = await api(rest, TOKEN, 'PUT', '/v1/tenants/away-2/defender', registration());
    expect(writeAway).toMatchObject({ status: 503, body: { error: { code: 'UNAVAILABLE' } } });
    expect((await api(rest, TOKEN, 'GET', '/v1/tenants/away-2/defender')).status).toBe(404);
    await broker.start();

    expect(registrar.lines.join('\n')).not.toContain(secret.clientSecret);
    await registrar.stop();
    expect(registrar.process.exitCode).toBe(0);
  }, 300_000);
});
