import { DefenderError, DefenderErrorCode } from '@urs/defender';
import type { TenantRecord } from '@urs/contracts';
import { capturingLogger, waitFor, type LogLine } from '@urs/testkit';
import type { Scheduler } from '../src/scheduler';
import type { TenantTable } from '../src/tenant-table';
import {
  INTERVAL_MS,
  RECHECK_MS,
  feed,
  memorySchedules,
  memoryStatus,
  record,
  replica,
  storeBackoff,
  type Run,
} from './support/scheduler';

// A tenant's record changed while its cycle ran on the only replica (an admin fixing the secret the cycle
// fails on): the new record is tried at once, not after the failed cycle's backoff.

const daily = (revision: number): TenantRecord =>
  ({ ...record('a', revision), defender: { pollIntervalMinutes: 1440 } }) as TenantRecord;

describe('createScheduler: a record changed during a failing cycle', () => {
  let scheduler: Scheduler | undefined;
  afterEach(async () => {
    await scheduler?.close(100);
  });

  /**
   * The only replica polling tenant a daily, whose cycles on revision 1 fail on the secret (a setup error: it
   * backs the tenant off a "day" of 1,440 "minutes" of 1 s); `beforeFailing` runs before that failure.
   */
  function failingOnRevisionOne(
    beforeFailing: (table: TenantTable) => Promise<unknown> = async () => undefined,
  ) {
    const schedules = memorySchedules();
    const runs: Run[] = [];
    const revisions: number[] = [];
    const made = replica(
      0,
      schedules,
      memoryStatus(),
      runs,
      async (input) => {
        revisions.push(input.record.revision);
        if (input.record.revision !== 1) return;
        await beforeFailing(made.table);
        throw new DefenderError(DefenderErrorCode.INVALID_SECRET, 'the secret does not match');
      },
      { intervalUnitMs: 1_000 },
    );
    scheduler = made.scheduler;
    return { schedules, runs, revisions, table: made.table, scheduler: made.scheduler, offset: { n: 0 } };
  }

  it("should try the new record at once, not after the backoff of the old one's failure", async () => {
    // The admin registers the fixed secret while the cycle still runs on the old one.
    const run = failingOnRevisionOne((table) => waitFor(() => table.get('a')?.revision === 2));
    await feed(run.table, [daily(1)], run.offset);
    run.scheduler.start();
    await waitFor(() => run.revisions.length === 1);
    await feed(run.table, [daily(2)], run.offset);
    await waitFor(() => run.runs.length === 1, { description: 'a cycle' });
    expect(run.revisions).toEqual([1, 2]);
    expect(await run.schedules.get('a')).toMatchObject({ failures: 0 });
  });

  it('should try the new record at once also when it comes while the old one is beginning its cycle', async () => {
    const run = failingOnRevisionOne();
    const begin = run.schedules.begin.bind(run.schedules);
    // The fixed secret arrives between the attempt's read of the table and its cycle's begin.
    run.schedules.begin = async (...args) => {
      if (run.revisions.length === 0) await feed(run.table, [daily(2)], run.offset);
      return begin(...args);
    };
    await feed(run.table, [daily(1)], run.offset);
    run.scheduler.start();
    await waitFor(() => run.runs.length === 1, { description: 'a cycle' });
    expect(run.revisions).toEqual([1, 2]);
  });
});

describe('createScheduler: a cycle its store refuses to begin', () => {
  let scheduler: Scheduler | undefined;
  afterEach(async () => {
    await scheduler?.close(100);
  });

  it('should look at the tenant again after the recheck wait, not as soon as its attempt returned, while its record in Redis is not enabled', async () => {
    const schedules = memorySchedules();
    /** When each begin was asked (the scheduler's clock: `Date.now`). */
    const begins: number[] = [];
    // This replica has not read the record's disabling yet: Redis holds it disabled at the same revision.
    schedules.begin = async () => {
      begins.push(Date.now());
      // Answered as Redis answers, after the event loop's turn.
      await new Promise((resolve) => setImmediate(resolve));
      return { reason: 'record-disabled', storedRevision: 1 };
    };
    const runs: Run[] = [];
    const lines: LogLine[] = [];
    const made = replica(0, schedules, memoryStatus(), runs, async () => undefined, {
      logger: capturingLogger(lines),
    });
    scheduler = made.scheduler;
    await feed(made.table, [record('a')]);
    scheduler.start();
    // Counted, not timed: a loaded machine looks fewer times in a fixed time.
    await waitFor(() => begins.length >= 5, { description: 'five begins refused' });
    // Once per URS_POLL_RECHECK_MS at most, not again as soon as the refused attempt returned.
    const gaps = begins.slice(1).map((at, index) => at - (begins[index] as number));
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(RECHECK_MS);
    expect(runs).toEqual([]);
    // Said once at warn for the record's revision, not at every look.
    const warned = lines.filter(
      (line) => line.level === 'warn' && line.message.startsWith('cycle not begun'),
    );
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ tenantId: 'a', revision: 1 });
  });

  it("should begin a new tenant's first cycle as soon as the registrar's write lands, not after the recheck wait, and warn only once it took long", async () => {
    const schedules = memorySchedules();
    const begin = schedules.begin.bind(schedules);
    /** The registrar has sent the record to Kafka and not stored it in Redis yet (it writes Kafka first). */
    let stored = false;
    let refused = 0;
    schedules.begin = async (...args) => {
      if (stored) return begin(...args);
      refused++;
      await new Promise((resolve) => setImmediate(resolve));
      return { reason: 'record-missing' };
    };
    const runs: Run[] = [];
    const lines: LogLine[] = [];
    // A recheck wait far past the test's: only a look at the next tick begins the cycle in time.
    const made = replica(0, schedules, memoryStatus(), runs, async () => undefined, {
      logger: capturingLogger(lines),
      recheckMs: 60_000,
    });
    scheduler = made.scheduler;
    await feed(made.table, [record('a')]);
    scheduler.start();
    await waitFor(() => refused >= 2, { timeoutMs: 5_000, description: 'the record looked for again' });
    stored = true;
    await waitFor(() => runs.length === 1, { timeoutMs: 5_000, description: 'the first cycle' });
    expect(lines.filter((line) => line.level === 'warn')).toEqual([]);
    expect(lines.find((line) => line.message.startsWith('cycle not begun'))).toMatchObject({
      level: 'debug',
      reason: 'record-missing',
    });

    // A record Redis never gets (the registrar's write failed after the send): warned of once the wait is over.
    const never = memorySchedules();
    never.begin = async () => {
      await new Promise((resolve) => setImmediate(resolve));
      return { reason: 'record-missing' };
    };
    const neverLines: LogLine[] = [];
    const other = replica(0, never, memoryStatus(), [], async () => undefined, {
      logger: capturingLogger(neverLines),
      registrarWaitMs: 50,
    });
    await feed(other.table, [record('b')]);
    other.scheduler.start();
    try {
      await waitFor(() => neverLines.some((line) => line.level === 'warn'), { timeoutMs: 5_000 });
      expect(neverLines.filter((line) => line.level === 'warn')).toEqual([
        expect.objectContaining({ tenantId: 'b', revision: 1, reason: 'record-missing' }),
      ]);
    } finally {
      await other.scheduler.close(100);
    }
  });
});

describe('createScheduler: a record changed while its stored backoff is read after a start', () => {
  let scheduler: Scheduler | undefined;
  afterEach(async () => {
    await scheduler?.close(100);
  });

  it("should keep the new record due at once, not place it by the old record's backoff", async () => {
    const schedules = memorySchedules();
    // Revision 1 failed and backed the tenant off for a thousand intervals.
    await storeBackoff(schedules, 'a', Date.now() + 1_000 * INTERVAL_MS);
    const status = memoryStatus();
    const read = status.getStatus.bind(status);
    /** Answers the first status read (the start's, of revision 1) when called. */
    let answerFirst: (() => void) | undefined;
    status.getStatus = async (tenantId) => {
      if (answerFirst === undefined) await new Promise<void>((resolve) => (answerFirst = resolve));
      return read(tenantId);
    };
    const runs: Run[] = [];
    const revisions: number[] = [];
    const made = replica(0, schedules, status, runs, async (input) => {
      revisions.push(input.record.revision);
    });
    scheduler = made.scheduler;
    const offset = { n: 0 };
    await feed(made.table, [record('a', 1)], offset);
    scheduler.start();
    await waitFor(() => answerFirst !== undefined);
    // The admin fixes the secret while the status of revision 1 is read.
    await feed(made.table, [record('a', 2)], offset);
    answerFirst?.();
    await waitFor(() => runs.length === 1, { description: 'the cycle of revision 2' });
    expect(revisions).toEqual([2]);
  });
});
