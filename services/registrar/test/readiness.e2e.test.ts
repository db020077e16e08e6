import { randomBytes, randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import type { Producer } from 'kafkajs';
import { createTenantStore } from '@urs/store';
import { deleteKeysMatching, waitFor } from '@urs/testkit';
// The process harness is shared with the poller's end-to-end suite.
import { api, freePort, spawnService, type ServiceProcess } from '../../poller/test/support/services';
import { buildServices, createTestStack, type TestStack } from '../../poller/test/support/stack';

/** The status of GET /readyz, or undefined while nothing listens on the port yet (or any more). */
async function readyz(port: number): Promise<number | undefined> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2_000) });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return undefined;
  }
}

/** Whether a TCP connection to the port is accepted. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setTimeout(2_000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/**
 * Polls /readyz until `until()` holds, and each time it answers 200 checks right after that the REST
 * port accepts a connection and `rebuilt()` holds. Returns every /readyz answer in order, the 200s the
 * REST port refused and the 200s given before `rebuilt()` held.
 */
async function watchReadiness(
  metricsPort: number,
  httpPort: number,
  until: () => boolean,
  rebuilt: () => Promise<boolean> = async () => true,
): Promise<{ answers: (number | undefined)[]; refusedWhileReady: number; readyBeforeRebuilt: number }> {
  const answers: (number | undefined)[] = [];
  let refusedWhileReady = 0;
  let readyBeforeRebuilt = 0;
  const deadline = Date.now() + 90_000;
  while (!until()) {
    if (Date.now() > deadline) throw new Error('the registrar did not reach the awaited state within 90 s');
    const status = await readyz(metricsPort);
    answers.push(status);
    if (status === 200) {
      if (!(await accepts(httpPort))) refusedWhileReady++;
      if (!(await rebuilt())) readyBeforeRebuilt++;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return { answers, refusedWhileReady, readyBeforeRebuilt };
}

// The registrar as its own process, with the REST port and /readyz watched from its first instant.
describe('registrar: readiness', () => {
  let stack: TestStack;
  let producer: Producer;
  let registrar: ServiceProcess;
  let metricsPort: number;
  let httpPort: number;
  const started = (line: string) => line.includes('"message":"started"');

  const tenant = (i: number) => ({
    tenantId: `ready-${i}`,
    defender: {
      enabled: true,
      azureTenantId: randomUUID(),
      clientId: randomUUID(),
      clientSecret: `S3cr3t~${randomBytes(10).toString('hex')}`,
      pollIntervalMinutes: 60,
      cloud: 'commercial',
      region: null,
      riskProfile: null,
    },
  });

  beforeAll(async () => {
    buildServices();
    stack = await createTestStack({ intervalUnitMs: 60_000, leaseMs: 30_000 });
    // A first registrar writes 20 tenants to urs.tenants; then Redis loses them, so the next start must
    // rebuild Redis from the topic before it is ready.
    const first = await stack.start('registrar');
    producer = stack.kafka.producer();
    await producer.connect();
    await producer.send({
      topic: stack.topic('urs.registration'),
      messages: [
        {
          key: 'director',
          value: JSON.stringify({
            schemaVersion: 1,
            generation: 1,
            mode: 'full',
            tenants: Array.from({ length: 20 }, (_, i) => tenant(i)),
          }),
        },
      ],
    });
    const store = createTenantStore(stack.redis.client, stack.redis.prefix);
    await waitFor(async () => (await store.ids()).length === 20, { timeoutMs: 30_000 });
    await first.stop();
    await deleteKeysMatching(stack.redis.client, `${stack.redis.prefix}*`);
    metricsPort = await freePort();
    httpPort = await freePort();
  }, 120_000);

  afterAll(async () => {
    await producer?.disconnect();
    await stack?.close();
  });

  it('a starting registrar should answer /readyz 200 only once the REST port listens and Redis was rebuilt', async () => {
    registrar = spawnService(
      'registrar',
      stack.env({ URS_METRICS_PORT: String(metricsPort), URS_HTTP_PORT: String(httpPort) }),
    );
    stack.processes.push(registrar);
    const store = createTenantStore(stack.redis.client, stack.redis.prefix);
    const watched = await watchReadiness(
      metricsPort,
      httpPort,
      () => {
        if (registrar.process.exitCode !== null) throw new Error(registrar.lines.join('\n'));
        return registrar.lines.some(started);
      },
      async () => (await store.ids()).length === 20,
    );

    expect(watched.refusedWhileReady).toBe(0);
    expect(watched.readyBeforeRebuilt).toBe(0);
    // While starting, the health port is either not listening yet or says not ready; never anything else.
    // (Whether a 503 is seen at all depends on how fast the rebuild is against the polling: not asserted.)
    expect(
      watched.answers.filter((status) => status !== undefined && status !== 503 && status !== 200),
    ).toEqual([]);
    expect(await readyz(metricsPort)).toBe(200);
    // Ready means the rebuild finished: every tenant is back in Redis and readable through the API.
    const get = await api(
      `http://127.0.0.1:${httpPort}`,
      stack.apiToken,
      'GET',
      '/v1/tenants/ready-7/defender',
    );
    expect(get.status).toBe(200);
    expect(get.body.tenantId).toBe('ready-7');
  }, 120_000);

  it('a stopping registrar should answer /readyz not ready before its REST port closes', async () => {
    let exited = false;
    registrar.process.once('exit', () => (exited = true));
    registrar.process.kill('SIGTERM');
    const watched = await watchReadiness(metricsPort, httpPort, () => exited);

    expect(watched.refusedWhileReady).toBe(0);
    const firstNotReady = watched.answers.findIndex((status) => status !== 200);
    expect(firstNotReady).toBeGreaterThanOrEqual(0);
    // Once it said not ready it never says ready again.
    expect(watched.answers.slice(firstNotReady)).not.toContain(200);
  }, 60_000);
});
