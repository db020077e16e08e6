import { DefenderError, DefenderErrorCode } from '@urs/defender';
import { UrsError } from '@urs/resilience';
import { waitFor } from '@urs/testkit';
import type { Scheduler } from '../src/scheduler';
import {
  feed,
  INTERVAL_MS,
  memorySchedules,
  memoryStatus,
  record,
  replica,
  type Run,
  UNIT_MS,
} from './support/scheduler';

// A tenant's failure streak counts failures of one kind in a row: a throttled streak does not grow the wait
// after a passing failure, nor the backoff of a setup error.

/** How each failed cycle's end was recorded, measured on the scheduler's clock. */
interface Ended {
  startedAt: number;
  endedAt: number;
  notBefore: number | null;
  retryAt: number | null | undefined;
}

function streakReplica(errors: Error[]) {
  const schedules = memorySchedules();
  const status = memoryStatus();
  const runs: Run[] = [];
  const ends: Ended[] = [];
  // The scheduler's clock, moved past each throttled backoff (a "minute" or more of real time) once recorded.
  let offset = 0;
  const now = () => Date.now() + offset;
  let startedAt = 0;
  const end = schedules.end.bind(schedules);
  schedules.end = async (lease, outcome) => {
    ends.push({ startedAt, endedAt: now(), notBefore: outcome.notBefore, retryAt: outcome.retryAt });
    const written = await end(lease, outcome);
    if (outcome.notBefore !== null) offset += outcome.notBefore - now() + 1;
    return written;
  };
  const failing = [...errors];
  const { table, scheduler } = replica(
    0,
    schedules,
    status,
    runs,
    async (input) => {
      startedAt = input.startedAt;
      const error = failing.shift();
      if (error) throw error;
    },
    { now },
  );
  return { table, scheduler, ends, runs };
}

const throttled = () =>
  new DefenderError(DefenderErrorCode.THROTTLED, 'the hourly quota is spent', { retryAfterMs: 120_000 });

describe('createScheduler: failure streaks of different kinds', () => {
  const started: Scheduler[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((s) => s.close(100)));
  });

  it('should try a transient failure after throttled ones again as after a first one', async () => {
    const { table, scheduler, ends, runs } = streakReplica([
      ...Array.from({ length: 4 }, throttled),
      new UrsError('DEFENDER_UNAVAILABLE', 'Microsoft Defender answered 503'),
    ]);
    await feed(table, [record('a')]);
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => runs.length === 1, { timeoutMs: 5_000 });
    expect(ends).toHaveLength(6);
    const transient = ends[4] as Ended;
    // 2 "minutes" ±20 % after it, not 2⁴ × 2 (capped at the interval).
    expect((transient.retryAt ?? 0) - transient.endedAt).toBeLessThanOrEqual(2.4 * UNIT_MS);
  });

  it('should back a setup error after throttled ones off one interval, as a first one', async () => {
    const { table, scheduler, ends } = streakReplica([
      ...Array.from({ length: 4 }, throttled),
      new DefenderError(DefenderErrorCode.INVALID_SECRET, 'the secret does not match'),
    ]);
    // 16 intervals (1.6 s) would be below the cap (`maxBackoffMs`, 10 s).
    await feed(table, [record('a')]);
    scheduler.start();
    started.push(scheduler);
    await waitFor(() => ends.length >= 5, { timeoutMs: 5_000 });
    const setup = ends[4] as Ended;
    expect((setup.notBefore ?? 0) - setup.startedAt).toBe(INTERVAL_MS);
  });
});
