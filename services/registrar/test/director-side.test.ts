import { randomBytes } from 'node:crypto';
import { ReplyError } from 'ioredis';
import type { Kafka } from 'kafkajs';
import type { RegistrationPush } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { canRetry, isInfrastructureFault } from '@urs/resilience';
import { createSecretSealer } from '@urs/secrets';
import { inboundMessage } from '@urs/testkit';
import { Registry } from '@urs/telemetry';
import { createDirectorSide } from '../src/director-side';
import {
  memoryPublisher,
  memoryStateStore,
  memoryTenantStore,
  registrationBody,
  tenantRecord,
  testSealer,
} from './fakes';

/** A Kafka whose topics hold nothing: the start's read of `urs.tenants` (`DirectorSide.catchUp`) finds no entry. */
const emptyKafka = {
  admin: () => ({
    connect: async () => undefined,
    fetchTopicOffsets: async () => [],
    disconnect: async () => undefined,
  }),
} as unknown as Kafka;

/**
 * The Director side over an already rebuilt Redis (the memory state says so: no Kafka read) holding one
 * tenant whose secret the test sealer opens, or does not.
 */
async function setup(opens: boolean, options: { redisFailsOnce?: boolean; kafka?: Kafka } = {}) {
  const tenants = memoryTenantStore();
  if (options.redisFailsOnce) {
    // Redis refusing the check's first read, as ioredis says it: no word of retrying on the error.
    const ids = tenants.ids.bind(tenants);
    let failed = false;
    tenants.ids = async () => {
      if (failed) return ids();
      failed = true;
      throw new ReplyError("READONLY You can't write against a read only replica.");
    };
  }
  const publisher = memoryPublisher();
  const sealer = testSealer();
  const stored = tenantRecord('stored', 1);
  // The fake record's secret is no sealing of the test key: like one sealed with another key under k1.
  await tenants.put(
    opens
      ? { ...stored, defender: { ...stored.defender, clientSecret: sealer.seal('s', 'stored') } }
      : stored,
  );
  const metrics = new Registry();
  const side = createDirectorSide({
    kafka: options.kafka ?? emptyKafka,
    publisher,
    tenants,
    state: memoryStateStore(),
    sealer,
    keyIds: new Set(['k1']),
    schedules: { clear: async () => undefined, carryFailure: async () => true },
    topics: { registration: 'urs.registration', tenants: 'urs.tenants', dlq: 'urs.dlq' },
    groupId: 'urs.registrar',
    logger: silentLogger,
    metrics,
  });
  const push = () =>
    side.handler(
      inboundMessage<RegistrationPush>(
        {
          schemaVersion: 1,
          generation: 1,
          mode: 'delta',
          tenants: [{ tenantId: 'new', defender: registrationBody() }],
        },
        { topic: 'urs.registration', offset: '0', timestamp: Date.now() },
      ),
    );
  return { side, tenants, publisher, push, metrics };
}

describe('createDirectorSide', () => {
  it('ready should reject naming URS_SECRET_KEY when the key opens none of the rebuilt secrets', async () => {
    const { side } = await setup(false);
    await expect(side.ready()).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringMatching(/^URS_SECRET_KEY does not open/),
    });
  });

  it('handler should seal nothing while the key is refused, and hold the push rather than dead-letter it', async () => {
    const { tenants, publisher, push } = await setup(false);
    const failure: unknown = await push().then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toMatchObject({ code: 'SECRET_KEY_REFUSED' });
    expect(canRetry(failure)).toBe(true);
    expect(isInfrastructureFault(failure)).toBe(true);
    expect(publisher.sent).toEqual([]);
    expect(await tenants.get('new')).toBeNull();
  });

  it('ready should check the key again after Redis failed the check, rather than take the key for refused', async () => {
    const { side, tenants, push } = await setup(true, { redisFailsOnce: true });
    await expect(side.ready()).rejects.toThrow('READONLY');
    await side.ready();
    await push();
    expect(await tenants.get('new')).not.toBeNull();
  });

  it('handler should apply a push once the key opened the stored secrets', async () => {
    const { side, tenants, push } = await setup(true);
    await side.ready();
    await push();
    expect(await tenants.get('new')).not.toBeNull();
  });
});

describe('createDirectorSide catching Redis up', () => {
  it('catchUp should store what Redis failed to take at every check, not waiting on a read of urs.tenants that hangs', async () => {
    // Kafka's admin does not answer until `answer` (a broker away: the read takes its timeout to fail).
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    const hangingKafka = {
      admin: () => ({
        connect: () => answered,
        fetchTopicOffsets: async () => [],
        disconnect: async () => undefined,
      }),
    } as unknown as Kafka;
    const { side, tenants } = await setup(true, { kafka: hangingKafka });
    await side.ready();
    // The first check starts the read, and returns with it under way.
    await side.catchUp();
    const put = tenants.put.bind(tenants);
    tenants.put = async () => {
      throw new Error('Redis connection lost');
    };
    await expect(
      side.registry.register({ tenantId: 'a', defender: registrationBody() as never }, { source: 'rest' }),
    ).rejects.toThrow('Redis connection lost');
    tenants.put = put;
    expect(await tenants.get('a')).toBeNull();
    // The next check stores it while the read still hangs.
    await side.catchUp();
    expect(await tenants.get('a')).toMatchObject({ tenantId: 'a' });
    answer();
    await side.readSettled();
  });

  it('urs_registrar_tenants_behind should count the entries on urs.tenants this registrar has yet to store in Redis, after each check', async () => {
    const { side, tenants, metrics } = await setup(true);
    const behind = () => /^urs_registrar_tenants_behind (\d+)$/m.exec(metrics.expose())?.[1];
    await side.ready();
    await side.catchUp();
    await side.readSettled();
    expect(behind()).toBe('0');
    const put = tenants.put.bind(tenants);
    tenants.put = async () => {
      throw new Error('Redis connection lost');
    };
    for (const tenantId of ['a', 'b'])
      await expect(
        side.registry.register({ tenantId, defender: registrationBody() as never }, { source: 'rest' }),
      ).rejects.toThrow('Redis connection lost');
    // Redis still failing: both stay behind.
    await side.catchUp();
    expect(behind()).toBe('2');
    tenants.put = put;
    await side.catchUp();
    expect(behind()).toBe('0');
  });
});

describe('createDirectorSide during a key rotation', () => {
  /**
   * A registrar given a new active key k2 beside k1, over a Redis holding one tenant whose secret is sealed
   * with k1; `fingerprint`: what Redis holds for k2 (a poller's claim), if anything.
   */
  async function rotating(fingerprint: 'none' | 'matching') {
    const tenants = memoryTenantStore();
    const k1 = testSealer();
    const sealer = createSecretSealer({
      activeKeyId: 'k2',
      keys: new Map([
        ['k2', randomBytes(32)],
        ['k1', Buffer.alloc(32, 7)],
      ]),
    });
    const stored = tenantRecord('old', 1);
    await tenants.put({
      ...stored,
      defender: {
        ...stored.defender,
        pollIntervalMinutes: 15,
        clientSecret: k1.seal(String(registrationBody()['clientSecret']), 'old'),
      },
    });
    const fingerprints = new Map<string, string>(
      fingerprint === 'matching' ? [['k2', sealer.fingerprint('k2')]] : [],
    );
    const side = createDirectorSide({
      kafka: emptyKafka,
      publisher: memoryPublisher(),
      tenants,
      state: memoryStateStore(),
      sealer,
      keyIds: new Set(['k1', 'k2']),
      fingerprints: {
        get: async (keyId) => fingerprints.get(keyId) ?? null,
        claim: async (keyId, own) => fingerprints.get(keyId) ?? own,
        where: (keyId) => `secret-key-fingerprint:${keyId}`,
      },
      schedules: { clear: async () => undefined, carryFailure: async () => true },
      topics: { registration: 'urs.registration', tenants: 'urs.tenants', dlq: 'urs.dlq' },
      groupId: 'urs.registrar',
      logger: silentLogger,
      metrics: new Registry(),
    });
    await side.handler(
      inboundMessage<RegistrationPush>(
        {
          schemaVersion: 1,
          generation: 2,
          mode: 'full',
          tenants: [{ tenantId: 'old', defender: registrationBody() }],
        },
        { topic: 'urs.registration', offset: '0', timestamp: Date.now() },
      ),
    );
    return (await tenants.get('old'))?.defender.clientSecret.keyId;
  }

  it('a full push should keep a secret sealed with a retired key as it is while the active key is unproven', async () => {
    expect(await rotating('none')).toBe('k1');
  });

  it('a full push should re-seal a secret of a retired key once the active key is proven', async () => {
    expect(await rotating('matching')).toBe('k2');
  });
});
