import type { Kafka } from 'kafkajs';
import { createPublisher, topicOffsets, type Publisher } from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { createSecretSealer, type SecretSealer } from '@urs/secrets';
import {
  createKeyFingerprintStore,
  createPollScheduleStore,
  createRegistrarStateStore,
  createTenantStore,
} from '@urs/store';
import { Registry } from '@urs/telemetry';
import {
  capturingLogger,
  createTestKafka,
  createTestRedis,
  deleteTopics,
  uniqueId,
  waitFor,
  type LogLine,
  type TestRedis,
} from '@urs/testkit';
import { createDirectorSide } from '../src/director-side';
import { readTenantLog } from '../src/rebuild';
import { createSecretResealer } from '../src/reseal';
import { registrationBody } from './fakes';
import { createRegistrarTopics } from './topics';

const K0 = Buffer.alloc(32, 3);
const K1 = Buffer.alloc(32, 9);
const secretOf = (tenantId: string) => `Secret~${tenantId}-value`;

// Tenants registered by a registrar whose active key was k0, then a registrar started with k1 active and k0 in
// URS_SECRET_KEYS_PREVIOUS, over real Kafka and Redis: its passes move every stored secret onto k1.
describe('createSecretResealer over Kafka and Redis', () => {
  let kafka: Kafka;
  let topics: [string, string, string];
  let redis: TestRedis;
  let publisher: Publisher;
  let lines: LogLine[];

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    topics = await createRegistrarTopics(kafka);
    redis = createTestRedis();
    publisher = await createPublisher(kafka);
    lines = [];
  });

  afterEach(async () => {
    await publisher.close();
    await redis.close();
    await deleteTopics(kafka, topics);
  });

  /** A registrar's registry and stores, sealing with `sealer` (keys `keyIds`). */
  function registrar(sealer: SecretSealer, keyIds: string[]) {
    const [registration, tenantsTopic, dlq] = topics;
    const tenants = createTenantStore(redis.client, redis.prefix);
    const schedules = createPollScheduleStore(redis.client, redis.prefix);
    const side = createDirectorSide({
      kafka,
      publisher,
      tenants,
      state: createRegistrarStateStore(redis.client, redis.prefix),
      sealer,
      keyIds: new Set(keyIds),
      fingerprints: createKeyFingerprintStore(redis.client, redis.prefix),
      schedules,
      topics: { registration, tenants: tenantsTopic, dlq },
      groupId: uniqueId('registrar'),
      logger: capturingLogger(lines),
      metrics: new Registry(),
      readTimeoutMs: 30_000,
    });
    return { ...side, tenants, schedules };
  }

  /** Messages written to the tenants topic so far. */
  async function tenantMessages(): Promise<bigint> {
    const offsets = await topicOffsets(kafka, topics[1]);
    return offsets.reduce((sum, o) => sum + BigInt(o.high), 0n);
  }

  it('should re-seal every secret of a retired key with the active one, keeping the record and the status, until none is left', async () => {
    // Before the rotation: k0 active.
    const before = registrar(createSecretSealer({ activeKeyId: 'k0', keys: new Map([['k0', K0]]) }), ['k0']);
    await before.ready();
    const ids = ['reseal-a', 'reseal-b', 'reseal-c', 'reseal-d'];
    for (const tenantId of ids) {
      await before.registry.register(
        {
          tenantId,
          defender: registrationBody({
            clientSecret: secretOf(tenantId),
            enabled: tenantId !== 'reseal-d',
            riskProfile: null,
          }) as never,
        },
        { source: 'director', generation: 7 },
      );
    }
    const old = new Map<string, TenantRecord>();
    for (const tenantId of ids) old.set(tenantId, (await before.tenants.get(tenantId)) as TenantRecord);
    // reseal-a failed its last cycle (a setup error, backed off): a re-seal must not start that over.
    const failing = old.get('reseal-a') as TenantRecord;
    const lease = (await before.schedules.acquire('reseal-a', 'poller-1', 5_000))!;
    await before.schedules.begin(lease, 'reseal-a-1', 1_000);
    await before.schedules.end(lease, {
      failures: 2,
      notBefore: 9_000_000,
      failedRevision: failing.revision,
    });
    await before.schedules.release(lease);
    const failedStatus = {
      state: 'error',
      lastErrorCode: 'DEFENDER_AUTH_FAILED',
      lastErrorMessage: 'Entra ID refused the client secret',
      lastErrorAt: '2026-01-01T00:00:00.000Z',
      lastErrorCycleId: 'reseal-a-1',
    } as const;
    await before.tenants.updateStatus('reseal-a', failedStatus);
    // reseal-b is being polled when the first pass comes: left for a later pass.
    const held = (await before.schedules.acquire('reseal-b', 'poller-2', 60_000))!;

    // After the rotation: k1 active, k0 in URS_SECRET_KEYS_PREVIOUS.
    const sealer = createSecretSealer({
      activeKeyId: 'k1',
      keys: new Map([
        ['k1', K1],
        ['k0', K0],
      ]),
    });
    // The pollers, rolled out first with k1, recorded its fingerprint: it proves the registrar's k1.
    await createKeyFingerprintStore(redis.client, redis.prefix).claim('k1', sealer.fingerprint('k1'));
    const after = registrar(sealer, ['k1', 'k0']);
    const metrics = new Registry({ processMetrics: false });
    const resealer = createSecretResealer({
      tenants: after.tenants,
      registry: after.registry,
      sealer,
      keyIds: new Set(['k1', 'k0']),
      ready: after.ready,
      activeKeyProven: after.activeKeyProven,
      metrics,
      logger: capturingLogger(lines),
      batch: 2,
      random: () => 0,
    });
    const gauge = () => /^urs_secrets_on_retired_keys (\d+)$/m.exec(metrics.expose())?.[1];
    expect(gauge()).toBeUndefined();

    // Two at most per pass; reseal-b held by its poller.
    const first = await resealer.pass();
    expect(first.resealed).toEqual({ k0: 1 });
    expect(first.retired).toBe(3);
    expect(gauge()).toBe('3');
    expect((await after.tenants.get('reseal-b'))?.defender.clientSecret.keyId).toBe('k0');
    await after.schedules.release(held);

    const watch = new AbortController();
    const watching = resealer.watch(50, watch.signal);
    try {
      await waitFor(() => gauge() === '0', { timeoutMs: 20_000 });
    } finally {
      watch.abort();
      await watching;
    }

    const log = await readTenantLog(kafka, topics[1], uniqueId('check'), capturingLogger([]), 30_000);
    for (const tenantId of ids) {
      const previous = old.get(tenantId) as TenantRecord;
      const stored = (await after.tenants.get(tenantId)) as TenantRecord;
      expect(stored.defender.clientSecret.keyId).toBe('k1');
      expect(stored.revision).toBeGreaterThan(previous.revision);
      expect(sealer.open(stored.defender.clientSecret, tenantId)).toBe(secretOf(tenantId));
      // The same record in all else: source, generation, enabled, settings, updatedAt.
      expect({ ...stored, revision: 0, defender: { ...stored.defender, clientSecret: null } }).toEqual({
        ...previous,
        revision: 0,
        defender: { ...previous.defender, clientSecret: null },
      });
      // On urs.tenants as in Redis.
      expect(log.find((entry) => entry.tenantId === tenantId)?.record).toEqual(stored);
    }
    // The failing tenant keeps its status and its backoff, carried onto the new revision.
    expect(await after.tenants.getStatus('reseal-a')).toMatchObject(failedStatus);
    expect(await after.schedules.get('reseal-a')).toMatchObject({
      failures: 2,
      notBefore: 9_000_000,
      failedRevision: (await after.tenants.get('reseal-a'))?.revision,
    });
    expect(await after.tenants.getStatus('reseal-d')).toMatchObject({ state: 'disabled' });

    // Nothing left: a pass writes nothing.
    const written = await tenantMessages();
    expect(await resealer.pass()).toEqual({ retired: 0, resealed: {} });
    expect(await tenantMessages()).toBe(written);
    expect(gauge()).toBe('0');

    const passes = lines.filter((line) => line.message === 'stored secrets re-sealed with the active key');
    expect(passes.reduce((sum, line) => sum + (line['resealed'] as number), 0)).toBe(4);
    expect(passes[0]).toMatchObject({ resealed: 1, fromKeyIds: { k0: 1 }, remaining: 3 });
    // No secret in any log line.
    const logged = JSON.stringify(lines);
    for (const tenantId of ids) expect(logged).not.toContain(secretOf(tenantId));
  });
});
