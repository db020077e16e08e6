import { ReplyError } from 'ioredis';
import { Registry } from '@urs/telemetry';
import { type LogLine, capturingLogger, waitFor } from '@urs/testkit';
import { CycleAbortedError, type CycleInput, type CycleResult } from '../src/cycle';
import {
  feed,
  memorySchedules,
  memoryStatus,
  record,
  sampleOf,
  sleep,
  oneDeviceListed,
  testScheduler,
} from './support/scheduler';

// A cycle the lease ended (renewals failing until it may have lapsed, or the lease lost) on the only
// replica: redone soon, not at the end of its interval.

const LEASE_MS = 200;
/** The poll interval's unit: a 10-"minute" interval is 20 s, far longer than any wait below. */
const UNIT_MS = 2_000;

function onlyReplica(renew: (held: () => Promise<boolean>) => Promise<boolean>, lines: LogLine[]) {
  const schedules = memorySchedules();
  const renewHeld = schedules.renew.bind(schedules);
  schedules.renew = (lease, ms) => renew(() => renewHeld(lease, ms));
  const attempts: number[] = [];
  const metrics = new Registry({ processMetrics: false });
  const { table, scheduler } = testScheduler({
    schedules,
    tenants: memoryStatus(),
    runCycle: async (input: CycleInput): Promise<CycleResult> => {
      attempts.push(Date.now());
      if (attempts.length === 1) {
        // The listing goes on while the lease holds, and stops as runCycle does once it may not.
        while (input.leaseHeld() && !input.signal.aborted) await sleep(5);
        throw new CycleAbortedError();
      }
      return oneDeviceListed(input.startedAt);
    },
    intervalUnitMs: UNIT_MS,
    leaseMs: LEASE_MS,
    logger: capturingLogger(lines),
    metrics,
  });
  return { table, scheduler, attempts, metrics };
}

describe('createScheduler: a cycle its lease ended', () => {
  it('should be redone after the attempts backoff once Redis answers again, when the lease lapsed while its renewals failed', async () => {
    let failing = true;
    const lines: LogLine[] = [];
    const { table, scheduler, attempts, metrics } = onlyReplica(async (held) => {
      if (failing) throw new ReplyError('LOADING Redis is loading the dataset in memory');
      return held();
    }, lines);
    await feed(table, [record('a')]);
    scheduler.start();
    try {
      await waitFor(() => attempts.length === 1, { timeoutMs: 5_000 });
      await waitFor(() => lines.some((line) => line.message === 'cycle aborted'), { timeoutMs: 5_000 });
      failing = false;
      // Not at the interval's end (20 s): the attempt failed on Redis, and is tried again after its backoff.
      await waitFor(() => attempts.length === 2, { timeoutMs: 5_000 });
      expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="listed"}')).toBe(1);
      expect(lines.some((line) => line.message.startsWith('poll attempts failing on Redis'))).toBe(true);
    } finally {
      await scheduler.close(1_000);
    }
  }, 15_000);

  it('should be looked at again soon when the lease was lost, and redone once it can be taken', async () => {
    let renewals = 0;
    const lines: LogLine[] = [];
    // The first renewal finds the lease gone (Redis lost the key); later ones are the store's.
    const { table, scheduler, attempts } = onlyReplica(
      async (held) => (++renewals === 1 ? false : held()),
      lines,
    );
    await feed(table, [record('a')]);
    scheduler.start();
    try {
      await waitFor(() => attempts.length === 2, { timeoutMs: 5_000 });
      expect(lines.some((line) => line.message === 'lease lost: aborting the cycle')).toBe(true);
    } finally {
      await scheduler.close(1_000);
    }
  }, 15_000);
});
