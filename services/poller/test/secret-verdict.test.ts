import { randomBytes } from 'node:crypto';
import type { Publisher } from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { createReplicaKeyCheck, createSecretSealer, type SecretSealer } from '@urs/secrets';
import type { CycleStore } from '@urs/store';
import { storedSecretsOf, waitFor } from '@urs/testkit';
import { cycleIdOf, runCycle, type CycleDeps } from '../src/cycle';
import type { DefenderGateway } from '../src/defender';
import type { Scheduler } from '../src/scheduler';
import { fitAfterTaking } from './support/cycle';
import { feed, memorySchedules, memoryStatus, replica, sleep, type Run } from './support/scheduler';

// Whose fault a stored secret the poller's key does not open is: the tenant's bad record when the key opens
// other tenants' secrets (a setup failure: status, backoff), the replica's wrong key when it opens none.

const sealerOf = (key: Buffer): SecretSealer =>
  createSecretSealer({ activeKeyId: 'k1', keys: new Map([['k1', key]]) });

const tenantRecord = (tenantId: string, sealer: SecretSealer, pollIntervalMinutes = 10): TenantRecord =>
  ({
    tenantId,
    revision: 2,
    enabled: true,
    defender: {
      azureTenantId: '00000000-0000-0000-0000-000000000001',
      clientId: '00000000-0000-0000-0000-000000000002',
      clientSecret: sealer.seal('client-secret', tenantId),
      pollIntervalMinutes,
      cloud: 'commercial',
      region: null,
      riskProfile: null,
    },
  }) as unknown as TenantRecord;

/** The cycle's dependencies of a poller with `key` over stored `records`; its secret never reaches Defender. */
function cycleDeps(key: Buffer, records: TenantRecord[]) {
  const stored = new Map(records.map((each) => [each.tenantId, each]));
  const calls = { defender: 0, begun: 0 };
  const sealer = sealerOf(key);
  const defender = {
    forTenant() {
      calls.defender++;
      throw new Error('Defender called with a secret that did not open');
    },
    planMode: () => ({ mode: 'per-device', perDeviceCapacity: 1_000 }),
  } as unknown as DefenderGateway;
  const deps: CycleDeps = {
    defender,
    sealer,
    replicaKey: createReplicaKeyCheck({
      sealer,
      secrets: storedSecretsOf(stored),
      keyIds: new Set(['k1']),
    }),
    publisher: {} as Publisher,
    cycles: {
      begin: async () => void calls.begun++,
    } as unknown as CycleStore,
    deviceBatchesTopic: 'urs.device-batches',
    batchFit: fitAfterTaking(),
    batchSize: 500,
    maxCycleMs: 300_000,
    logger: silentLogger,
  };
  return { deps, calls };
}

const input = (record: TenantRecord, startedAt = 0, intervalMs = 600_000) => ({
  record,
  cycleId: cycleIdOf(record.tenantId, startedAt),
  startedAt,
  intervalMs,
  lease: { tenantId: record.tenantId, token: '1:poller' },
  signal: new AbortController().signal,
  leaseHeld: () => true,
});

describe('runCycle on a secret its key does not open', () => {
  const registrarKey = randomBytes(32);
  const registrar = sealerOf(registrarKey);

  it("runCycle should fail with the tenant's SECRET_RECORD_UNREADABLE when the key opens other tenants' secrets", async () => {
    // t1's revision was sealed by a registrar started with another key under the same key id.
    const bad = tenantRecord('t1', sealerOf(randomBytes(32)));
    const { deps, calls } = cycleDeps(registrarKey, [bad, tenantRecord('t2', registrar)]);
    await expect(runCycle(deps, input(bad))).rejects.toMatchObject({
      code: 'SECRET_RECORD_UNREADABLE',
      message: expect.stringMatching(
        /does not open with the poller's key.*register the tenant's client secret again/,
      ),
      cause: expect.objectContaining({ code: 'SECRET_UNREADABLE' }),
    });
    expect(calls).toEqual({ defender: 0, begun: 0 });
  });

  it("runCycle should keep SECRET_UNREADABLE, the replica's fault, when the key opens no other tenant's secret", async () => {
    const own = tenantRecord('t1', registrar);
    const { deps, calls } = cycleDeps(randomBytes(32), [own, tenantRecord('t2', registrar)]);
    await expect(runCycle(deps, input(own))).rejects.toMatchObject({ code: 'SECRET_UNREADABLE' });
    // Nothing else to try: the replica's fault too.
    const alone = cycleDeps(randomBytes(32), [own]);
    await expect(runCycle(alone.deps, input(own))).rejects.toMatchObject({ code: 'SECRET_UNREADABLE' });
    expect(calls).toEqual({ defender: 0, begun: 0 });
  });
});

describe('createScheduler on a secret its key does not open', () => {
  const started: Scheduler[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((s) => s.close(100)));
  });
  const registrarKey = randomBytes(32);
  const registrar = sealerOf(registrarKey);

  /** A replica with `key` running the real cycle over `records` (the first one in its table). */
  function poller(key: Buffer, records: TenantRecord[]) {
    const schedules = memorySchedules();
    const status = memoryStatus();
    const runs: Run[] = [];
    const tries: number[] = [];
    const { deps } = cycleDeps(key, records);
    const { table, scheduler } = replica(0, schedules, status, runs, async (cycle) => {
      tries.push(cycle.startedAt);
      await runCycle(deps, cycle);
    });
    started.push(scheduler);
    return { schedules, status, tries, table, scheduler };
  }

  it("createScheduler should back a tenant off, its status an error, when its record's secret is bad", async () => {
    // Polled once a "day" (1440 "minutes" of 10 ms: 14.4 s): the retry of a `local` failure came 20 ms later.
    const bad = tenantRecord('daily', sealerOf(randomBytes(32)), 1440);
    const { schedules, status, tries, table, scheduler } = poller(registrarKey, [
      bad,
      tenantRecord('other', registrar),
    ]);
    await feed(table, [bad]);
    scheduler.start();
    await waitFor(() => status.statuses.get('daily')?.state === 'error', { timeoutMs: 1_000, intervalMs: 1 });
    expect(status.statuses.get('daily')).toMatchObject({
      lastErrorCode: 'SECRET_RECORD_UNREADABLE',
      lastErrorMessage: expect.stringMatching(
        /^the stored client secret of tenant daily .*register the tenant's/,
      ),
    });
    // Several rechecks later: not tried again, and the backoff is not dropped as a replica's own fault.
    await sleep(150);
    expect(tries).toHaveLength(1);
    const schedule = await schedules.get('daily');
    expect(schedule.failures).toBe(1);
    expect(schedule.notBefore).toBe((tries[0] ?? 0) + 1440 * 10);
  });

  it("createScheduler should not back a tenant off when the key opens no other tenant's secret", async () => {
    const daily = tenantRecord('daily', registrar, 1440);
    const { schedules, status, tries, table, scheduler } = poller(randomBytes(32), [
      daily,
      tenantRecord('other', registrar),
    ]);
    await feed(table, [daily]);
    scheduler.start();
    await waitFor(() => tries.length >= 2, { timeoutMs: 1_000, intervalMs: 1 });
    const schedule = await schedules.get('daily');
    expect(schedule.failures).toBe(0);
    expect(schedule.notBefore).toBeUndefined();
    expect(status.statuses.get('daily')).toMatchObject({
      state: 'error',
      lastErrorCode: 'SECRET_UNREADABLE',
      lastErrorMessage: expect.stringMatching(/^poller replica-0: /),
    });
  });
});
