import type { TenantRecord } from '@urs/contracts';
import { capturingLogger, type LogLine, waitFor } from '@urs/testkit';
import { firstDueAt } from '../src/schedule';
import { feed, memorySchedules, memoryStatus, record, replica, sleep, type Run } from './support/scheduler';

// Redis keeps nothing on disk: wiped, it loses every poll schedule, and the registrar writes the tenants back
// from urs.tenants. The tenants polled before must not then all be polled at once.
describe('createScheduler after Redis lost the poll schedules', () => {
  /** Real minutes: nothing comes due by itself while the test runs, only as the test moves the clock on. */
  const MINUTE_MS = 60_000;
  const INTERVAL_MS = 10 * MINUTE_MS;
  const TENANTS = 200;

  const changedAt = (tenant: TenantRecord, at: number): TenantRecord => ({
    ...tenant,
    updatedAt: new Date(at).toISOString(),
  });

  it('should spread the tenants polled before over their interval, and poll a new registration at once', async () => {
    let skewMs = 0;
    const now = (): number => Date.now() + skewMs;
    const rebuiltAt = now();
    const runs: Run[] = [];
    const made = replica(
      0,
      memorySchedules({ tenantsRebuiltAt: rebuiltAt }),
      memoryStatus(),
      runs,
      async () => undefined,
      { intervalUnitMs: MINUTE_MS, now },
    );
    // Registered long before the wipe (polled every interval since), and one registered a minute before it.
    const polledBefore = Array.from({ length: TENANTS }, (_, i) =>
      changedAt(record(`tenant-${i}`), rebuiltAt - 30 * INTERVAL_MS),
    );
    await feed(made.table, [...polledBefore, changedAt(record('new'), rebuiltAt - MINUTE_MS)]);
    const polled = (): Run[] => runs.filter((run) => run.tenantId !== 'new');
    try {
      made.scheduler.start();
      await waitFor(() => runs.some((run) => run.tenantId === 'new'), {
        description: 'the new tenant polled',
      });
      // Ticks enough for every tenant due at once to start.
      await sleep(200);
      expect(polled().length).toBeLessThan(TENANTS / 10);

      // Half an interval on, about half of them.
      skewMs = INTERVAL_MS / 2;
      await waitFor(() => polled().length >= TENANTS * 0.3, { description: 'a part polled' });
      await sleep(200);
      expect(polled().length).toBeLessThanOrEqual(TENANTS * 0.7);

      // A whole interval on, every one of them, none before its place (the run's start on the moved clock)
      // nor twice within an interval.
      skewMs = INTERVAL_MS;
      const polledIds = (): Set<string> => new Set(polled().map((run) => run.tenantId));
      await waitFor(() => polledIds().size === TENANTS, { description: 'every tenant polled' });
      for (const tenant of polledBefore) {
        const starts = runs.filter((run) => run.tenantId === tenant.tenantId).map((run) => run.start);
        expect(starts[0]).toBeGreaterThanOrEqual(firstDueAt(tenant.tenantId, INTERVAL_MS, rebuiltAt));
        for (let i = 1; i < starts.length; i++)
          expect((starts[i] as number) - (starts[i - 1] as number)).toBeGreaterThanOrEqual(INTERVAL_MS);
      }
    } finally {
      await made.scheduler.close(100);
    }
  });

  it('should log the spread once when Redis is wiped under a running poller', async () => {
    let skewMs = 0;
    const now = (): number => Date.now() + skewMs;
    let rebuiltAt = 0;
    const stored = memorySchedules();
    const schedules = { ...stored, tenantsRebuiltAt: async () => rebuiltAt };
    const runs: Run[] = [];
    const lines: LogLine[] = [];
    const made = replica(0, schedules, memoryStatus(), runs, async () => undefined, {
      intervalUnitMs: MINUTE_MS,
      now,
      logger: capturingLogger(lines),
    });
    const tenants = Array.from({ length: 20 }, (_, i) =>
      changedAt(record(`tenant-${i}`), now() - 30 * INTERVAL_MS),
    );
    await feed(made.table, tenants);
    const spreadLines = (): LogLine[] =>
      lines.filter((line) => line.message.startsWith('poll schedules lost with Redis'));
    try {
      made.scheduler.start();
      await waitFor(() => runs.length === tenants.length, { description: 'every tenant polled once' });
      expect(spreadLines()).toEqual([]);

      // An interval on, Redis wiped and the tenants rebuilt: each tenant, due by this replica's view, is
      // placed later in the interval.
      skewMs = INTERVAL_MS;
      for (const tenant of tenants) await stored.clear(tenant.tenantId);
      rebuiltAt = now();
      await waitFor(() => spreadLines().length > 0, { description: 'the spread logged' });
      await sleep(200);
      expect(spreadLines()).toEqual([
        expect.objectContaining({ level: 'info', rebuiltAt: new Date(rebuiltAt).toISOString() }),
      ]);
      expect(runs.length).toBeLessThan(tenants.length * 2);
    } finally {
      await made.scheduler.close(100);
    }
  });
});
