import type { Kafka } from 'kafkajs';
import { createPublisher, type Publisher } from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createRegistrarStateStore, createTenantStore, type TenantStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { createTestKafka, createTestRedis, deleteTopics, uniqueId, type TestRedis } from '@urs/testkit';
import { createDirectorSide } from '../src/director-side';
import { registrationBody, testSealer } from './fakes';
import { createRegistrarTopics } from './topics';

const rest = { source: 'rest' as const };
const body = (overrides: Record<string, unknown> = {}) => registrationBody(overrides) as never;

/** The Redis tenant store, whose `put` and `remove` fail while `failing` says so (Redis failing after the send). */
function failingStore(store: TenantStore) {
  const failing = { put: false, remove: false };
  const attempted: TenantRecord[] = [];
  const refused = () => new Error('Redis connection lost');
  const wrapped: TenantStore = {
    ...store,
    async put(record) {
      attempted.push(record);
      if (failing.put) throw refused();
      return store.put(record);
    },
    async remove(tenantId, revision) {
      if (failing.remove) throw refused();
      return store.remove(tenantId, revision);
    },
  };
  return { store: wrapped, failing, attempted };
}

// A record (or a deletion) on urs.tenants that did not reach Redis: the registrar killed between the two
// writes, or Redis failing after the send while the registrar stays up. Over real Kafka and Redis.
describe('Redis caught up with urs.tenants', () => {
  let kafka: Kafka;
  let topics: [string, string, string];
  let redis: TestRedis;
  let publisher: Publisher;
  let groupId: string;

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    topics = await createRegistrarTopics(kafka);
    redis = createTestRedis();
    publisher = await createPublisher(kafka);
    groupId = uniqueId('registrar');
  });

  afterEach(async () => {
    await publisher.close();
    await redis.close();
    await deleteTopics(kafka, topics);
  });

  /** A registrar started on the shared Redis and topics, ready (rebuilt or caught up) as main.ts's start. */
  async function start(options: { kafka?: Kafka; caughtUp?: boolean; signal?: AbortSignal } = {}) {
    const [registration, tenantsTopic, dlq] = topics;
    const redisTenants = failingStore(createTenantStore(redis.client, redis.prefix));
    const state = createRegistrarStateStore(redis.client, redis.prefix);
    const cleared: string[] = [];
    const metrics = new Registry();
    const side = createDirectorSide({
      kafka: options.kafka ?? kafka,
      publisher,
      tenants: redisTenants.store,
      state,
      sealer: testSealer(),
      keyIds: new Set(['k1']),
      schedules: {
        clear: async (tenantId) => void cleared.push(tenantId),
        carryFailure: async () => true,
      },
      topics: { registration, tenants: tenantsTopic, dlq },
      groupId,
      logger: silentLogger,
      metrics,
      readTimeoutMs: 30_000,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    // As main.ts's watch: ready, then caught up.
    await side.ready();
    if (options.caughtUp !== false) {
      await side.catchUp();
      await side.rebuilder.catchUp();
    }
    const tenants = createTenantStore(redis.client, redis.prefix);
    /** `urs_registrar_tenants_behind` as served, undefined while unset. */
    const behind = () => /^urs_registrar_tenants_behind (\d+)$/m.exec(metrics.expose())?.[1];
    return { ...side, ...redisTenants, tenants, state, cleared, behind };
  }

  it('should store at the next start a record sent to urs.tenants whose put failed', async () => {
    const first = await start();
    await first.registry.register({ tenantId: 'kept', defender: body() }, rest);
    const old = await first.tenants.get('kept');
    first.failing.put = true;
    // A new tenant, and a rotated secret of one known: both on urs.tenants, neither in Redis.
    await expect(first.registry.register({ tenantId: 'new', defender: body() }, rest)).rejects.toThrow(
      'Redis connection lost',
    );
    await expect(
      first.registry.register({ tenantId: 'kept', defender: body({ clientSecret: 'r0tated~secret' }) }, rest),
    ).rejects.toThrow('Redis connection lost');
    const sent = new Map(first.attempted.map((record) => [record.tenantId, record]));
    expect(await first.tenants.get('new')).toBeNull();
    expect(await first.tenants.get('kept')).toEqual(old);

    // Killed there: the next registrar finds Redis rebuilt, and Kafka ahead of it.
    const second = await start();
    expect(await second.tenants.get('new')).toEqual(sent.get('new'));
    expect(await second.tenants.get('kept')).toEqual(sent.get('kept'));
    expect((await second.tenants.getStatus('new')).state).toBe('active');
  });

  it('should count at start the entries of urs.tenants it found Redis behind on and could not store yet', async () => {
    const first = await start();
    first.failing.put = true;
    await expect(first.registry.register({ tenantId: 'new', defender: body() }, rest)).rejects.toThrow(
      'Redis connection lost',
    );

    // Killed there; the next registrar's read of urs.tenants finds it, while Redis still refuses it.
    const second = await start({ caughtUp: false });
    second.failing.put = true;
    await second.rebuilder.catchUp();
    expect(second.behind()).toBe('1');
    second.failing.put = false;
    await second.catchUp();
    expect(second.behind()).toBe('0');
    expect(await second.tenants.get('new')).not.toBeNull();
  });

  it('should apply at the next start a deletion sent to urs.tenants whose removal failed', async () => {
    const first = await start();
    await first.state.observeGeneration(4);
    await first.registry.register({ tenantId: 'gone', defender: body() }, rest);
    await first.registry.register({ tenantId: 'stays', defender: body() }, rest);
    first.failing.remove = true;
    await expect(first.registry.remove('gone')).rejects.toThrow('Redis connection lost');
    expect(await first.tenants.get('gone')).not.toBeNull();

    const second = await start();
    expect(await second.tenants.get('gone')).toBeNull();
    expect(await second.tenants.getStatus('gone')).toEqual({});
    // As the deletion leaves it: its schedule forgotten, and generation 4 delivered again must not register it.
    expect(second.cleared).toEqual(['gone']);
    expect(await second.state.deletionGeneration('gone')).toBe(4);
    expect(await second.tenants.get('stays')).not.toBeNull();
  });

  it('should leave alone what Redis holds as new as urs.tenants or newer', async () => {
    const first = await start();
    await first.registry.register({ tenantId: 'a', defender: body() }, rest);
    const record = await first.tenants.get('a');
    // Redis ahead of Kafka (a record put by hand): the older one on urs.tenants does not overwrite it.
    const ahead = { ...(record as TenantRecord), revision: (record as TenantRecord).revision + 10 };
    await first.tenants.put(ahead);
    const second = await start();
    expect(await second.tenants.get('a')).toEqual(ahead);
    expect(second.cleared).toEqual([]);
  });

  it('should store a record whose put failed while the registrar runs, once Redis answers', async () => {
    const registrar = await start();
    await registrar.registry.register({ tenantId: 'a', defender: body() }, rest);
    await registrar.registry.register({ tenantId: 'b', defender: body() }, rest);
    registrar.failing.put = true;
    await expect(
      registrar.registry.register(
        { tenantId: 'a', defender: body({ clientSecret: 'r0tated~secret' }) },
        rest,
      ),
    ).rejects.toThrow('Redis connection lost');
    await expect(
      registrar.registry.register({ tenantId: 'b', defender: body({ enabled: false }) }, rest),
    ).rejects.toThrow('Redis connection lost');
    const sent = new Map(registrar.attempted.slice(-2).map((record) => [record.tenantId, record]));
    // Redis still failing: left to catch up.
    expect(await registrar.registry.catchUpPending()).toEqual({ applied: 0, pending: 2 });
    registrar.failing.put = false;
    expect(await registrar.registry.catchUpPending()).toEqual({ applied: 2, pending: 0 });
    expect(await registrar.tenants.get('a')).toEqual(sent.get('a'));
    expect(await registrar.tenants.get('b')).toEqual(sent.get('b'));
    // The disabled one as its write leaves it: disabled, its schedule forgotten.
    expect((await registrar.tenants.getStatus('b')).state).toBe('disabled');
    expect(registrar.cleared).toContain('b');
    expect(await registrar.registry.catchUpPending()).toEqual({ applied: 0, pending: 0 });
  });

  it('should not put back a record read from urs.tenants before its tenant was deleted', async () => {
    const registrar = await start();
    const { record } = await registrar.registry.register({ tenantId: 'gone', defender: body() }, rest);
    // The start-up read's entries end where the topic ended when it began: an administrator's DELETE (on any
    // replica) meanwhile leaves the tenant's record in them, and Redis without one.
    expect(await registrar.registry.remove('gone')).toBe(true);
    expect(await registrar.registry.catchUp([{ tenantId: 'gone', record }])).toEqual({
      applied: 0,
      pending: 0,
    });
    expect(await registrar.tenants.get('gone')).toBeNull();
    expect(await registrar.tenants.getStatus('gone')).toEqual({});
    // Registered again: a revision above the deletion's, stored.
    const again = await registrar.registry.register({ tenantId: 'gone', defender: body() }, rest);
    expect(again.record.revision).toBeGreaterThan(record.revision);
    expect(await registrar.tenants.get('gone')).toEqual(again.record);
    expect((await registrar.tenants.getStatus('gone')).state).toBe('active');
  });

  it('should not put back a record whose put failed once another replica deleted its tenant', async () => {
    const first = await start();
    const second = await start();
    await first.registry.register({ tenantId: 'gone', defender: body() }, rest);
    first.failing.put = true;
    await expect(
      first.registry.register({ tenantId: 'gone', defender: body({ clientSecret: 'r0tated~secret' }) }, rest),
    ).rejects.toThrow('Redis connection lost');
    expect(await second.registry.remove('gone')).toBe(true);
    first.failing.put = false;
    expect(await first.registry.catchUpPending()).toEqual({ applied: 0, pending: 0 });
    expect(await first.tenants.get('gone')).toBeNull();
    expect(await first.tenants.getStatus('gone')).toEqual({});
    // A Director full push leaving it out then finds nothing to disable: nothing more on urs.tenants.
    expect(
      await first.registry.disable('gone', 'left out', { source: 'director', generation: 1 }),
    ).toBeNull();
  });

  it('should tombstone again a record older than its deletion that urs.tenants ends with', async () => {
    const first = await start();
    const { record } = await first.registry.register({ tenantId: 'gone', defender: body() }, rest);
    expect(await first.registry.remove('gone')).toBe(true);
    // A write whose lock lapsed while Kafka retried its send: its record lands after the tombstone.
    await publisher.send(topics[1], 'urs/tenant-record', [{ key: 'gone', value: record }]);

    const second = await start();
    expect(second.attempted.map((put) => put.revision)).toEqual([record.revision]);
    expect(await second.tenants.get('gone')).toBeNull();
    // Redis's removal marker expired (30 days on): the topic's last word about the tenant is a deletion.
    await redis.client.del(`${redis.prefix}tenant-removed:gone`);
    const third = await start();
    expect(third.attempted).toEqual([]);
    expect(await third.tenants.get('gone')).toBeNull();
    expect(await third.tenants.getStatus('gone')).toEqual({});
  });

  it('should store a record whose put failed while the read of urs.tenants keeps failing', async () => {
    // Redis rebuilt before; this registrar's read of the topic fails (Kafka's admin away), its writes do not.
    await start();
    const away = Object.assign(Object.create(kafka) as Kafka, {
      admin: () => {
        throw new Error('Kafka admin away');
      },
    });
    const registrar = await start({ kafka: away, caughtUp: false });
    await registrar.registry.register({ tenantId: 'a', defender: body() }, rest);
    registrar.failing.put = true;
    await expect(
      registrar.registry.register({ tenantId: 'a', defender: body({ enabled: false }) }, rest),
    ).rejects.toThrow('Redis connection lost');
    registrar.failing.put = false;
    // The check does not wait on the read, which fails.
    await registrar.catchUp();
    await expect(registrar.rebuilder.catchUp()).rejects.toThrow();
    expect(await registrar.tenants.get('a')).toEqual(registrar.attempted.at(-1));
    expect((await registrar.tenants.getStatus('a')).state).toBe('disabled');
  });

  it('should cut its read of urs.tenants once the registrar stops, failing retryably', async () => {
    const first = await start();
    await first.registry.register({ tenantId: 'a', defender: body() }, rest);
    const stop = new AbortController();
    const registrar = await start({ caughtUp: false, signal: stop.signal });
    stop.abort(new Error('stopping'));
    await expect(registrar.rebuilder.catchUp()).rejects.toMatchObject({
      code: 'REGISTRAR_STOPPING',
      canRetry: true,
    });
  });

  it('should store a record whose put failed before the next write of its tenant reads it', async () => {
    const registrar = await start();
    await registrar.registry.register({ tenantId: 'a', defender: body() }, rest);
    registrar.failing.put = true;
    await expect(
      registrar.registry.register(
        { tenantId: 'a', defender: body({ clientSecret: 'r0tated~secret' }) },
        rest,
      ),
    ).rejects.toThrow('Redis connection lost');
    const rotated = registrar.attempted.at(-1) as TenantRecord;
    registrar.failing.put = false;
    // An update keeping the secret keeps the rotated one, the one the pollers were given on urs.tenants.
    const { record } = await registrar.registry.register(
      { tenantId: 'a', defender: body({ pollIntervalMinutes: 30, clientSecret: 'stored-secret' }) },
      rest,
      { keepSecret: true },
    );
    expect(record.revision).toBeGreaterThan(rotated.revision);
    expect(testSealer().open(record.defender.clientSecret, 'a')).toBe('r0tated~secret');
    expect(rotated.revision).toBeGreaterThan(0);
  });
});
