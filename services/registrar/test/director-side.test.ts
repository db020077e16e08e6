import { ReplyError } from 'ioredis';
import type { Kafka } from 'kafkajs';
import type { RegistrationPush } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { canRetry, isInfrastructureFault } from '@urs/resilience';
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

/**
 * The Director side over an already rebuilt Redis (the memory state says so: no Kafka read) holding one
 * tenant whose secret the test sealer opens, or does not.
 */
async function setup(opens: boolean, options: { redisFailsOnce?: boolean } = {}) {
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
  const side = createDirectorSide({
    kafka: {} as Kafka,
    publisher,
    tenants,
    state: memoryStateStore(),
    sealer,
    keyIds: new Set(['k1']),
    schedules: { clear: async () => undefined, carryFailure: async () => true },
    topics: { registration: 'urs.registration', tenants: 'urs.tenants', dlq: 'urs.dlq' },
    groupId: 'urs.registrar',
    logger: silentLogger,
    metrics: new Registry(),
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
  return { side, tenants, publisher, push };
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
