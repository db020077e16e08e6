import { waitFor } from '@urs/testkit';
import {
  feed,
  memorySchedules,
  memoryStatus,
  oneDeviceListed,
  record,
  replica,
  testScheduler,
  type Run,
} from './support/scheduler';

// A stop (SIGTERM) while an attempt waits on Redis: the attempt begins no cycle the drain would then cut.

describe('createScheduler: an attempt under way at a stop', () => {
  it('should begin no cycle once the scheduler is stopping, also when it got the lease', async () => {
    const schedules = memorySchedules();
    const acquire = schedules.acquire.bind(schedules);
    let acquiring = false;
    let answer = (): void => undefined;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    // Redis answers the lease's acquisition only after the stop began.
    schedules.acquire = async (...args) => {
      acquiring = true;
      await answered;
      return acquire(...args);
    };
    const begin = schedules.begin.bind(schedules);
    let begins = 0;
    schedules.begin = async (...args) => {
      begins++;
      return begin(...args);
    };
    const runs: Run[] = [];
    const { table, scheduler } = replica(0, schedules, memoryStatus(), runs, async () => undefined);
    await feed(table, [record('a')]);
    scheduler.start();
    await waitFor(() => acquiring);
    const closed = scheduler.close(1_000);
    answer();
    await closed;
    expect(begins).toBe(0);
    expect(runs).toEqual([]);
    // The lease was given back: another replica takes the tenant at once.
    expect(await acquire('a', 'other', 1_000)).not.toBeNull();
  });
});

describe('createScheduler: woken early by cycles that end', () => {
  it('should keep no timer nor stop listener per early wake-up (many cycles ending within one tick)', async () => {
    const timers = (): number => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length;
    const runs: Run[] = [];
    // A tick far longer than the test: every wake-up of the loop is an early one, by a cycle's end.
    const { table, scheduler } = testScheduler({
      schedules: memorySchedules(),
      tenants: memoryStatus(),
      tickMs: 60_000,
      maxConcurrentCycles: 1,
      runCycle: async (input) => {
        runs.push({
          tenantId: input.record.tenantId,
          replica: 0,
          start: input.startedAt,
          end: Date.now(),
          leaseHeld: true,
        });
        return oneDeviceListed(Date.now());
      },
    });
    await feed(
      table,
      Array.from({ length: 30 }, (_, i) => record(`tenant-${i}`)),
    );
    const before = timers();
    try {
      scheduler.start();
      await waitFor(() => runs.length === 30, { description: 'every tenant polled, one after the other' });
      // Each wait of a tick ended early must not leave its tick's timer (and its listener on the stop) behind.
      expect(timers() - before).toBeLessThan(10);
    } finally {
      await scheduler.close(100);
    }
  });
});
