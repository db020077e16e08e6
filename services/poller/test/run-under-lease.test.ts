import { silentLogger } from '@urs/logging';
import { capturingLogger, type LogLine } from '@urs/testkit';
import { Registry } from '@urs/telemetry';
import type { PollLease } from '@urs/store';
import { ReplyError } from 'ioredis';
import { CycleAbortedError, CycleListedNotRecordedError, type CycleInput } from '../src/cycle';
import type { CycleEnd } from '../src/cycle-end';
import { createLeaseClock, errorCode, leaseTime } from '@urs/resilience';
import { createRunUnderLease, type RunUnderLeaseDeps } from '../src/run-under-lease';
import { oneDeviceListed, record, sampleOf } from './support/scheduler';

// A begun cycle's lease: renewed right after the cycle began, not a third of the lease later, and silent once it ended.

const LEASE_MS = 60_000;

/** A runUnderLease of a 60 s lease over `deps` (a lease always renewed, a cycle listing one device otherwise). */
function underLease(deps: Partial<RunUnderLeaseDeps> & Pick<RunUnderLeaseDeps, 'now'>) {
  const metrics = new Registry({ processMetrics: false });
  const ends: CycleEnd = {
    endListed: async () => true,
    endListedCycle: async () => true,
    listedNotRecorded: async () => {},
    forget: () => {},
    endFailed: async () => {},
  };
  return createRunUnderLease({
    schedules: { renew: async () => true },
    tenants: { updatePollingStatus: async () => true },
    runCycle: async () => oneDeviceListed(deps.now()),
    leaseMs: LEASE_MS,
    recheckMs: 20,
    ends,
    log: silentLogger,
    cyclesTotal: metrics.counter('cycles_total', 'cycles'),
    cycleSeconds: metrics.histogram('cycle_seconds', 'seconds'),
    stop: new AbortController().signal,
    placeAt: () => {},
    releaseQuietly: async () => {},
    ...deps,
  });
}

const lease: PollLease = { tenantId: 'a', token: '1:replica' };

/** Ends that record which of them were called. */
function recordedEnds(called: string[]): CycleEnd {
  return {
    endListed: async () => {
      called.push('endListed');
      return true;
    },
    endListedCycle: async () => true,
    listedNotRecorded: async (_lease, cycleId) => {
      called.push(`listedNotRecorded ${cycleId}`);
    },
    forget: () => {},
    endFailed: async () => {
      called.push('endFailed');
    },
  };
}

describe('runUnderLease', () => {
  it('should leave a cycle whose every batch went out and whose listing Redis did not record running, not failed', async () => {
    const now = () => 0;
    const called: string[] = [];
    const placed: number[] = [];
    const readonly = new ReplyError("READONLY You can't write against a read only replica.");
    const metrics = new Registry({ processMetrics: false });
    const runUnderLease = underLease({
      runCycle: async () => {
        throw new CycleListedNotRecordedError(readonly, {
          totalBatches: 1,
          totalDevices: 1,
          listedAt: new Date(0).toISOString(),
        });
      },
      ends: recordedEnds(called),
      placeAt: (_tenantId, at) => placed.push(at),
      cyclesTotal: metrics.counter('cycles_total', 'cycles'),
      now,
    });
    const held = { lease, clock: createLeaseClock(0, LEASE_MS, now) };
    const run = runUnderLease(
      record('a'),
      held,
      'a:cycle',
      0,
      600_000,
      { failures: 0 },
      new AbortController(),
    );
    await expect(run).rejects.toBeInstanceOf(CycleListedNotRecordedError);
    // Not ended as failed: neither listed again within minutes nor counted as the tenant's failure. Its
    // totals are kept for the next try to record, and it counts as listed.
    expect(called).toEqual(['listedNotRecorded a:cycle']);
    expect(placed).toEqual([]);
    expect(sampleOf(metrics, 'cycles_total{outcome="listed"}')).toBe(1);
  });

  it('should renew the lease at once, so a cycle begun late in its lease (a slow Redis) still holds it', async () => {
    let clock = 0;
    const now = () => clock;
    const renewals: number[] = [];
    const listed: boolean[] = [];
    const runUnderLease = underLease({
      schedules: {
        renew: async () => {
          renewals.push(clock);
          return true;
        },
      },
      runCycle: async (input: CycleInput) => {
        // The renewal sent as the cycle began has been answered; the listing goes on past the acquisition's
        // lease, well within a third of a lease after the cycle began.
        await new Promise((resolve) => setImmediate(resolve));
        clock = LEASE_MS + 1_000;
        listed.push(input.leaseHeld());
        return oneDeviceListed(clock);
      },
      now,
    });
    // Acquired at 0; the schedule's reads and the cycle's begin took most of the lease.
    const held = { lease, clock: createLeaseClock(0, LEASE_MS, now) };
    clock = LEASE_MS - 5_000;
    await runUnderLease(record('a'), held, 'a:cycle', clock, 600_000, { failures: 0 }, new AbortController());
    expect(renewals).toEqual([LEASE_MS - 5_000]);
    expect(listed).toEqual([true]);
  });

  it('should abort the cycle once its lease may have lapsed while Redis answers no renewal, failing the attempt as a fault of Redis', async () => {
    const lines: LogLine[] = [];
    const placed: number[] = [];
    // Renewals the client queues while Redis is away: never answered, never failed.
    const runUnderLease = underLease({
      schedules: { renew: () => new Promise<boolean>(() => undefined) },
      leaseMs: 60,
      log: capturingLogger(lines),
      placeAt: (_tenantId, at) => placed.push(at),
      // A listing that goes on until its cycle is aborted: it spent the tenant's quota past the lease's end, while
      // another poller could take the tenant over and list it too.
      runCycle: (input: CycleInput) =>
        new Promise((_resolve, reject) =>
          input.signal.addEventListener('abort', () => reject(new CycleAbortedError()), { once: true }),
        ),
      now: Date.now,
    });
    const held = { lease, clock: createLeaseClock(leaseTime(), 60) };
    const run = runUnderLease(
      record('a'),
      held,
      'a:cycle',
      0,
      600_000,
      { failures: 0 },
      new AbortController(),
    );
    const error = await run.catch((failure: unknown) => failure);
    expect(errorCode(error)).toBe('REDIS_UNAVAILABLE');
    expect(lines.map((line) => line.message)).toContain(
      'lease not renewed before it may have lapsed: aborting the cycle',
    );
    expect(placed).toEqual([]);
  });

  it('should say nothing of its lease when a renewal sent during a cycle that ended answers after it', async () => {
    const now = () => 0;
    const lines: LogLine[] = [];
    const placed: number[] = [];
    /** Answers the renewal sent as the cycle began. */
    let answer: ((held: boolean) => void) | undefined;
    const runUnderLease = underLease({
      schedules: { renew: () => new Promise<boolean>((resolve) => (answer = resolve)) },
      log: capturingLogger(lines),
      placeAt: (_tenantId, at) => placed.push(at),
      now,
    });
    const held = { lease, clock: createLeaseClock(0, LEASE_MS, now) };
    await runUnderLease(record('a'), held, 'a:cycle', 0, 600_000, { failures: 0 }, new AbortController());
    // The lease was given back after the cycle ended: a renewal arriving after it finds none.
    answer?.(false);
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines.filter((line) => line.level === 'warn')).toEqual([]);
    expect(placed).toEqual([]);
  });
});
