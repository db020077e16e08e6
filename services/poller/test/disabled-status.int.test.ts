import type { TenantRecord } from '@urs/contracts';
import { DefenderError, DefenderErrorCode } from '@urs/defender';
import { silentLogger } from '@urs/logging';
import { createPollScheduleStore, createTenantStore, type TenantStore } from '@urs/store';
import { Registry } from '@urs/telemetry';
import { inboundMessage, tenantRecord, testRedisPerTest, waitFor } from '@urs/testkit';
import type { CycleInput, CycleResult } from '../src/cycle';
import { createScheduler, type Scheduler } from '../src/scheduler';
import { createTenantTable, type TenantTable } from '../src/tenant-table';
import { oneDeviceListed } from './support/scheduler';

// A tenant disabled or deleted while its cycle ends, over the real Redis: the registrar stores the record, clears
// the schedule and writes the status (`disabled`, no next poll), and the poller reads the record from
// `urs.tenants` a moment before or after the cycle's end. No cycle comes after to correct the status: the one
// the registrar wrote must stay.

describe('a tenant disabled or deleted while its cycle ends', () => {
  const redis = testRedisPerTest();
  const schedulers: Scheduler[] = [];

  afterEach(async () => {
    await Promise.all(schedulers.splice(0).map((scheduler) => scheduler.close(100)));
  });

  /**
   * A poller over Redis whose cycle of `acme` waits at its end (its last batch being sent) until `end()`, then
   * answers `outcome`: listed in full (the abort comes too late to stop it), or failed.
   */
  async function poller(outcome: 'listed' | 'failed') {
    const tenants = createTenantStore(redis.client, redis.prefix);
    const schedules = createPollScheduleStore(redis.client, redis.prefix);
    const record = tenantRecord('acme', { revision: 1, pollIntervalMinutes: 10 });
    await tenants.put(record);
    await tenants.updateStatus('acme', { state: 'active' });
    let reached!: () => void;
    const atEnd = new Promise<void>((resolve) => (reached = resolve));
    let end!: () => void;
    const ended = new Promise<void>((resolve) => (end = resolve));
    const table = createTenantTable();
    table.expectEnd(new Map());
    await table.handle(inboundMessage(record, { offset: '0', key: 'acme' }));
    const scheduler = createScheduler({
      table,
      schedules,
      tenants,
      cycles: { get: async () => null, abandon: async () => false, listed: async () => {} },
      runCycle: async (_input: CycleInput): Promise<CycleResult> => {
        reached();
        await ended;
        if (outcome === 'failed')
          throw new DefenderError(DefenderErrorCode.UNAVAILABLE, 'Defender answered 503');
        return oneDeviceListed(Date.now());
      },
      holderId: 'poller-1',
      intervalUnitMs: 60_000,
      leaseMs: 5_000,
      maxConcurrentCycles: 1,
      tickMs: 10,
      recheckMs: 50,
      maxBackoffMs: 60_000,
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
    });
    schedulers.push(scheduler);
    scheduler.start();
    await atEnd;
    return { tenants, schedules, table, record, scheduler, end };
  }

  /** What the registrar writes to Redis when it disables the tenant. */
  async function registrarDisables(
    tenants: TenantStore,
    schedules: ReturnType<typeof createPollScheduleStore>,
    record: TenantRecord,
  ): Promise<TenantRecord> {
    const disabled = { ...record, revision: record.revision + 1, enabled: false };
    await tenants.put(disabled);
    await schedules.clear(record.tenantId);
    await tenants.updateStatus(record.tenantId, {
      state: 'disabled',
      nextPollAt: null,
      registrationError: null,
    });
    return disabled;
  }

  async function feed(table: TenantTable, record: TenantRecord): Promise<void> {
    await table.handle(inboundMessage(record, { offset: '1', key: record.tenantId }));
  }

  it('runUnderLease should leave the disabled status of a tenant disabled while its listed cycle ends', async () => {
    const { tenants, schedules, table, record, scheduler, end } = await poller('listed');
    await feed(table, await registrarDisables(tenants, schedules, record));
    end();
    await waitFor(() => scheduler.running() === 0);
    const status = await tenants.getStatus('acme');
    expect(status.state).toBe('disabled');
    expect(status.nextPollAt).toBeUndefined();
  });

  it('runUnderLease should leave the disabled status of a tenant disabled while its failing cycle ends', async () => {
    const { tenants, schedules, table, record, scheduler, end } = await poller('failed');
    const disabled = await registrarDisables(tenants, schedules, record);
    end();
    await waitFor(() => scheduler.running() === 0);
    // The poller reads the disabled record only after the cycle's end.
    await feed(table, disabled);
    const status = await tenants.getStatus('acme');
    expect(status.state).toBe('disabled');
    expect(status.nextPollAt).toBeUndefined();
    expect(status.lastErrorCode).toBeUndefined();
  });

  it('runUnderLease should not write the status of a tenant deleted while its cycle ends', async () => {
    const { tenants, scheduler, end } = await poller('listed');
    await tenants.remove('acme');
    end();
    await waitFor(() => scheduler.running() === 0);
    expect(await tenants.getStatus('acme')).toEqual({});
  });
});
