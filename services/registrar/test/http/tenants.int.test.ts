import type { Kafka } from 'kafkajs';
import { createPublisher, topicOffsets, type Publisher } from '@urs/bus';
import type { RegistrationPush } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createRegistrarStateStore, createTenantStore, type TenantStatus } from '@urs/store';
import { Registry } from '@urs/telemetry';
import {
  createTestKafka,
  createUniqueTopics,
  createTestRedis,
  deleteTopics,
  inboundMessage,
  type TestRedis,
} from '@urs/testkit';
import { createRegistrationHandler } from '../../src/director';
import { tenantRoutes } from '../../src/http/tenants';
import { registrationBody, testRegistry, testSealer } from '../fakes';
import { routeCaller } from './call';

// The REST routes over the registry as main.ts wires them, writing to a real `urs.tenants` and Redis.
describe('tenantRoutes over Kafka and Redis', () => {
  let kafka: Kafka;
  let topic: string;
  let dlq: string;
  let redis: TestRedis;
  let publisher: Publisher;

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    [topic, dlq] = (await createUniqueTopics(kafka, [
      { prefix: 'tenants', numPartitions: 3, configEntries: [{ name: 'cleanup.policy', value: 'compact' }] },
      { prefix: 'dlq' },
    ])) as [string, string];
    redis = createTestRedis();
    publisher = await createPublisher(kafka);
  });

  afterEach(async () => {
    await publisher.close();
    await redis.close();
    await deleteTopics(kafka, [topic, dlq]);
  });

  function setup() {
    const tenants = createTenantStore(redis.client, redis.prefix);
    const sealer = testSealer();
    const state = createRegistrarStateStore(redis.client, redis.prefix);
    const registry = testRegistry({ tenants, state, publisher, tenantsTopic: topic, sealer });
    const call = routeCaller(
      tenantRoutes({
        registry,
        tenants,
        sealer,
        ensureRebuilt: async () => undefined,
        accessTestTimeoutMs: 5_000,
        checkAccess: () => Promise.reject(new Error('not called')),
      }),
    );
    const director = createRegistrationHandler({
      registry,
      tenants,
      state,
      publisher,
      dlqTopic: dlq,
      ensureRebuilt: async () => undefined,
      logger: silentLogger,
      metrics: new Registry(),
    });
    let offset = 0;
    const push = (generation: number, tenantList: unknown[]) =>
      director.handle(
        inboundMessage<RegistrationPush>(
          { schemaVersion: 1, generation, mode: 'delta', tenants: tenantList },
          { topic: 'urs.registration', offset: String(offset++), timestamp: Date.now() },
        ),
      );
    return { tenants, registry, call, push };
  }

  /** How many records `urs.tenants` holds (compaction does not run on a topic this young). */
  async function recordsOnTopic(): Promise<number> {
    const offsets = await topicOffsets(kafka, topic);
    return offsets.reduce((sum, partition) => sum + Number(partition.high), 0);
  }

  it('PUT should write one record when the same registration is PUT again, keeping the status', async () => {
    const { tenants, call } = setup();
    const first = await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    expect(first.status).toBe(201);
    const failed = {
      state: 'error',
      lastErrorCode: 'DEFENDER_THROTTLED',
      lastErrorMessage: 'Defender answered 429: try again in 60 s',
    } as const;
    await tenants.updateStatus('acme', failed);
    const { clientSecret: _secret, ...withoutSecret } = registrationBody();
    for (const body of [registrationBody(), withoutSecret]) {
      const again = await call('PUT', '/v1/tenants/acme/defender', body);
      expect(again).toMatchObject({
        status: 200,
        body: { revision: (first.body as { revision: number }).revision, status: failed },
      });
    }
    expect(await recordsOnTopic()).toBe(1);
    expect(await tenants.getStatus('acme')).toMatchObject(failed);
  });

  it('PUT should write the same settings when they take the tenant over from Director', async () => {
    const { tenants, registry, call } = setup();
    await registry.register(
      { tenantId: 'acme', defender: registrationBody() as never },
      { source: 'director', generation: 1 },
      { skipIfUnchanged: true },
    );
    const takeover = await call('PUT', '/v1/tenants/acme/defender', registrationBody());
    expect(takeover).toMatchObject({ status: 200, body: { source: 'rest' } });
    expect(await recordsOnTopic()).toBe(2);
    expect((await tenants.get('acme'))?.source).toBe('rest');
  });

  it('GET should show a refused update of a polled tenant after its next cycles, until one is accepted', async () => {
    const { tenants, call, push } = setup();
    const item = (overrides: Record<string, unknown> = {}) => ({
      tenantId: 'ok1',
      defender: registrationBody(overrides),
    });
    expect(await push(5, [item()])).toMatchObject({ applied: 1 });
    const registered = await call('GET', '/v1/tenants/ok1/defender');
    // Director rotates the secret; the new one ends in a pasted line break: refused, the old one keeps polling.
    expect(await push(6, [item({ clientSecret: 'Rotated~secret-value\n' })])).toMatchObject({ rejected: 1 });
    const refusal = {
      code: 'REGISTRATION_INVALID',
      message: expect.stringMatching(/^registration refused: clientSecret must be the secret's Value/),
      violations: [{ field: 'clientSecret', rule: expect.stringMatching(/secret's Value/) }],
      at: expect.any(String),
      source: 'director',
      generation: 6,
    };
    const refused = await call('GET', '/v1/tenants/ok1/defender');
    // Named as a PUT's 400 names the field, though Director's push named it `defender.clientSecret`.
    const namesTheRule = /refused: clientSecret must be the secret's Value/;
    expect(JSON.stringify(refused.body)).toMatch(namesTheRule);
    await tenants.cycleListed('ok1', 'cycle-1', { deviceCount: 12, lastCycleId: 'cycle-1' });
    expect(JSON.stringify((await call('GET', '/v1/tenants/ok1/defender')).body)).toMatch(namesTheRule);
    expect(refused).toMatchObject({
      status: 200,
      body: {
        revision: (registered.body as { revision: number }).revision,
        status: { registrationError: refusal },
      },
    });

    // Polling goes on with the settings in force: cycles listed, an error the vuln-fetcher reported.
    expect(await call('GET', '/v1/tenants/ok1/defender')).toMatchObject({
      body: { status: { state: 'active', deviceCount: 12, registrationError: refusal } },
    });
    await tenants.updateStatus('ok1', {
      state: 'error',
      lastErrorCode: 'DEFENDER_CONSENT_MISSING',
      lastErrorMessage: 'grant Vulnerability.Read.All',
      lastErrorCycleId: 'cycle-2',
    });
    await tenants.cycleListed('ok1', 'cycle-2', { deviceCount: 13 });
    expect(await call('GET', '/v1/tenants/ok1/defender')).toMatchObject({
      body: {
        status: { state: 'error', lastErrorCode: 'DEFENDER_CONSENT_MISSING', registrationError: refusal },
      },
    });
    await tenants.cycleListed('ok1', 'cycle-3', { deviceCount: 14 });
    const afterCycles = (await call('GET', '/v1/tenants/ok1/defender')).body as { status: TenantStatus };
    expect(afterCycles.status).toMatchObject({ state: 'active', registrationError: refusal });
    expect(afterCycles.status.lastErrorCode).toBeUndefined();

    // A PUT refused the same way is answered 400 and changes nothing: Director's refusal stays in sight.
    const put = await call(
      'PUT',
      '/v1/tenants/ok1/defender',
      registrationBody({ clientSecret: 'Other~secret\n' }),
    );
    expect(put).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION_FAILED' } } });
    expect(await call('GET', '/v1/tenants/ok1/defender')).toMatchObject({
      body: {
        revision: (registered.body as { revision: number }).revision,
        status: { registrationError: refusal },
      },
    });

    // Director sends the secret again, without the line break: accepted, the refusal is gone.
    expect(await push(7, [item({ clientSecret: 'Rotated~secret-value' })])).toMatchObject({ applied: 1 });
    const accepted = (await call('GET', '/v1/tenants/ok1/defender')).body as { status: TenantStatus };
    expect(accepted.status.state).toBe('active');
    expect(accepted.status.registrationError).toBeUndefined();
  });
});
