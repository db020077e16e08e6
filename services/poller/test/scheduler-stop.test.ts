import { waitFor } from '@urs/testkit';
import { feed, memorySchedules, memoryStatus, record, replica, type Run } from './support/scheduler';

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
