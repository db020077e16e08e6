import type { Kafka, Producer } from 'kafkajs';
import { createConsumerRunner, createPublisher, type ConsumerRunner, type Publisher } from '@urs/bus';
import { createRegistrarStateStore, createTenantStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import {
  capturingLogger,
  createTestKafka,
  createTestRedis,
  deleteKeysMatching,
  deleteTopics,
  uniqueId,
  waitFor,
  type LogLine,
  type TestRedis,
} from '@urs/testkit';
import { createDirectorSide } from '../src/director-side';
import { registrationBody, testSealer } from './fakes';
import { createRegistrarTopics } from './topics';

const item = (tenantId: string, overrides: Record<string, unknown> = {}) => ({
  tenantId,
  defender: registrationBody(overrides),
});

// The registrar's Director side as main.ts builds it (createDirectorSide), over real Kafka and Redis: each `start` is a
// registrar (re)started with the same consumer group, its Redis possibly wiped in between.
describe('createRegistrationHandler over Kafka and Redis', () => {
  let kafka: Kafka;
  let topics: [string, string, string];
  let redis: TestRedis;
  let publisher: Publisher;
  let producer: Producer;
  let runner: ConsumerRunner | undefined;
  let groupId: string;
  let lines: LogLine[];

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    topics = await createRegistrarTopics(kafka);
    redis = createTestRedis();
    publisher = await createPublisher(kafka);
    producer = kafka.producer();
    await producer.connect();
    groupId = uniqueId('registrar');
    lines = [];
  });

  afterEach(async () => {
    await runner?.close();
    runner = undefined;
    await producer.disconnect();
    await publisher.close();
    await redis.close();
    const admin = kafka.admin();
    await admin.connect();
    try {
      await admin.deleteGroups([groupId]);
    } finally {
      await admin.disconnect();
    }
    await deleteTopics(kafka, topics);
  });

  /** A registrar: registry, rebuilder and Director handler, consuming the registration topic. */
  async function start() {
    const [registration, tenantsTopic, dlq] = topics;
    const logger = capturingLogger(lines);
    const tenants = createTenantStore(redis.client, redis.prefix);
    const state = createRegistrarStateStore(redis.client, redis.prefix);
    const metrics = new Registry();
    const { registry, ready, handler } = createDirectorSide({
      kafka,
      publisher,
      tenants,
      state,
      sealer: testSealer(),
      keyIds: new Set(['k1']),
      schedules: { clear: async () => undefined, carryFailure: async () => true },
      topics: { registration, tenants: tenantsTopic, dlq },
      groupId,
      logger,
      metrics,
      readTimeoutMs: 30_000,
    });
    runner = createConsumerRunner({
      kafka,
      service: 'registrar',
      groupId,
      subscriptions: [{ topic: registration, contract: 'urs/registration-push', handler }],
      publisher,
      dlqTopic: dlq,
      logger,
      metrics: new Registry({ processMetrics: false }),
    });
    await runner.start();
    // As main.ts's start(): rebuilt, and the key checked against what was rebuilt.
    await ready();
    /** The refused entries counted, as /metrics would show them. */
    const refusedCount = () => metrics.counter('urs_registrations_refused_total', '').get();
    return { registry, tenants, state, refusedCount };
  }

  /** Stops the registrar (committing what it handled) and wipes its Redis. */
  async function restartOnWipedRedis() {
    await runner?.close();
    runner = undefined;
    await deleteKeysMatching(redis.client, `${redis.prefix}*`);
    return start();
  }

  /** Pushes a generation and waits until the registrar handled it (applied or ignored). */
  async function push(generation: number, mode: 'full' | 'delta', tenants: unknown[]): Promise<LogLine> {
    const handled = () =>
      lines.filter(
        (line) =>
          line.message === 'Director push applied' || line.message === 'older Director generation ignored',
      );
    const before = handled().length;
    await producer.send({
      topic: topics[0],
      messages: [{ key: 'director', value: JSON.stringify({ schemaVersion: 1, generation, mode, tenants }) }],
    });
    await waitFor(() => handled().length > before, { timeoutMs: 30_000, description: `push ${generation}` });
    return handled()[before] as LogLine;
  }

  it('handle should leave a tenant an administrator deleted deleted when its generation comes again', async () => {
    const { registry, tenants } = await start();
    await push(5, 'full', [item('d1'), item('d2')]);
    expect(await registry.remove('d2')).toBe(true);
    // Generation 5 delivered again (Kafka delivers at least once): d2 stays deleted.
    expect(await push(5, 'full', [item('d1'), item('d2')])).toMatchObject({ applied: 0, unchanged: 2 });
    expect(await tenants.get('d2')).toBeNull();
    expect(await tenants.ids()).toEqual(['d1']);

    // Redis wiped: the deletion is remembered from its tombstone on urs.tenants.
    const again = await restartOnWipedRedis();
    await push(5, 'full', [item('d1'), item('d2')]);
    expect(await again.tenants.get('d2')).toBeNull();

    // A newer generation that lists d2 is Director's newer intent: it registers it again.
    expect(await push(6, 'full', [item('d1'), item('d2')])).toMatchObject({ applied: 1 });
    expect(await again.tenants.get('d2')).toMatchObject({ source: 'director', generation: 6, enabled: true });
  });

  it('handle should dead-letter a push whose generation a JSON number cannot hold exactly, and go on', async () => {
    const { tenants } = await start();
    await push(7, 'full', [item('d1')]);
    // 2^53 + 1: read as a JSON number it becomes 2^53, and every later generation would be older.
    const tooLarge = JSON.stringify({ schemaVersion: 1, generation: 0, mode: 'full', tenants: [] }).replace(
      '"generation":0',
      '"generation":9007199254740993',
    );
    await producer.send({ topic: topics[0], messages: [{ key: 'director', value: tooLarge }] });
    expect(await push(8, 'full', [item('d1', { pollIntervalMinutes: 30 })])).toMatchObject({
      message: 'Director push applied',
      generation: 8,
    });
    expect((await tenants.get('d1'))?.defender.pollIntervalMinutes).toBe(30);
    expect(lines.filter((line) => line.message === 'message dead-lettered')).toEqual([
      expect.objectContaining({
        code: 'CONTRACT_INVALID',
        reason: 'urs/registration-push: generation must be a whole number from 0 to 9007199254740991',
      }),
    ]);
  });

  it('handle should ignore an older generation after Redis was wiped, though the newer ones changed nothing', async () => {
    const { tenants } = await start();
    await push(7, 'full', [item('d1')]);
    // Generation 8 changes nothing: it writes no tenant record that could carry its number.
    expect(await push(8, 'full', [item('d1')])).toMatchObject({ applied: 0, unchanged: 1 });
    expect((await tenants.get('d1'))?.generation).toBe(7);

    const again = await restartOnWipedRedis();
    expect(await again.state.lastGeneration()).toBe(8);
    // A late generation 7 that would change d1.
    expect(await push(7, 'full', [item('d1', { pollIntervalMinutes: 30 })])).toMatchObject({
      level: 'warn',
      message: 'older Director generation ignored',
      generation: 7,
      lastApplied: 8,
    });
    expect((await again.tenants.get('d1'))?.defender.pollIntervalMinutes).toBe(15);
  });

  it('handle should end the status of a tenant whose every registration was refused once a full push leaves it out', async () => {
    const { tenants } = await start();
    await push(1, 'full', [item('d1'), item('never', { clientId: 'nope' })]);
    expect(await tenants.getStatus('never')).toMatchObject({ state: 'registration-rejected' });
    await push(2, 'full', [item('d1')]);
    expect(await tenants.getStatus('never')).toEqual({});
    expect(await tenants.ids()).toEqual(['d1']);
  });

  it('handle should count a refused entry once when its generation comes again', async () => {
    const { refusedCount } = await start();
    const entries = [item('d1'), item('bad', { clientId: 'nope' })];
    await push(3, 'full', entries);
    expect(refusedCount()).toBe(1);
    // Generation 3 delivered again: the refusal is recorded already.
    expect(await push(3, 'full', entries)).toMatchObject({ rejected: 1 });
    expect(refusedCount()).toBe(1);
    // A registrar restarted on the same Redis, handed generation 3 again.
    await runner?.close();
    runner = undefined;
    const again = await start();
    await push(3, 'full', entries);
    expect(again.refusedCount()).toBe(0);
    expect(await push(4, 'full', entries)).toMatchObject({ rejected: 1 });
    expect(again.refusedCount()).toBe(1);
  });
});
