import { ReplyError } from 'ioredis';
import { DefenderError, DefenderErrorCode } from '@urs/defender';
import { UrsError } from '@urs/resilience';
import {
  backoffUntil,
  changedWithin,
  classifyFailure,
  dueAt,
  failureKindOf,
  firstDueAt,
  nextStreak,
  transientRetryAt,
  withoutLocalBackoff,
} from '../src/schedule';

describe('dueAt', () => {
  it('dueAt should make a never-polled tenant due at once', () => {
    expect(dueAt({ failures: 0 }, 600_000, 1)).toBe(0);
  });

  it('dueAt should be one interval (the current one) after the last start', () => {
    expect(dueAt({ failures: 0, lastStartedAt: 1_000 }, 600_000, 1)).toBe(601_000);
    expect(dueAt({ failures: 0, lastStartedAt: 1_000 }, 1_200_000, 2)).toBe(1_201_000);
  });

  it('dueAt should hold a backoff, unless the settings changed since the failure', () => {
    const schedule = { failures: 2, lastStartedAt: 1_000, notBefore: 5_000_000, failedRevision: 3 };
    expect(dueAt(schedule, 600_000, 3)).toBe(5_000_000);
    expect(dueAt(schedule, 600_000, 4)).toBe(0);
  });

  it('dueAt should hold a backoff for a record older than the failed one (a re-seal carried the failure onto a revision not read yet)', () => {
    const schedule = { failures: 2, lastStartedAt: 1_000, notBefore: 5_000_000, failedRevision: 4 };
    expect(dueAt(schedule, 600_000, 3)).toBe(5_000_000);
  });

  it('dueAt should try a transient failure again at its retry time, when that comes before the interval', () => {
    expect(dueAt({ failures: 1, lastStartedAt: 1_000, retryAt: 121_000 }, 86_400_000, 1)).toBe(121_000);
    expect(dueAt({ failures: 1, lastStartedAt: 1_000, retryAt: 900_000 }, 600_000, 1)).toBe(601_000);
  });

  it('dueAt should make an abandoned cycle due at once', () => {
    expect(dueAt({ failures: 0, lastStartedAt: 1_000, runningCycleId: 'acme-1' }, 600_000, 1)).toBe(0);
  });

  it('dueAt should make a tenant with no cycle started due at its first due time, and only such a tenant', () => {
    expect(dueAt({ failures: 0 }, 600_000, 1, 300_000)).toBe(300_000);
    expect(dueAt({ failures: 0, lastStartedAt: 1_000 }, 600_000, 1, 300_000)).toBe(601_000);
  });
});

describe('first due time of a tenant with no schedule', () => {
  const INTERVAL_MS = 600_000;
  const NOW = Date.parse('2026-12-07T03:00:00.000Z');
  const at = (ms: number): { updatedAt: string } => ({ updatedAt: new Date(ms).toISOString() });

  it('changedWithin should tell a record changed within its interval, or not saying when, from an older one', () => {
    expect(changedWithin(at(NOW - 60_000), INTERVAL_MS, NOW)).toBe(true);
    expect(changedWithin(at(NOW + 5_000), INTERVAL_MS, NOW)).toBe(true);
    expect(changedWithin({ updatedAt: 'not a time' }, INTERVAL_MS, NOW)).toBe(true);
    expect(changedWithin(at(NOW - INTERVAL_MS), INTERVAL_MS, NOW)).toBe(false);
    expect(changedWithin(at(NOW - 30 * 86_400_000), INTERVAL_MS, NOW)).toBe(false);
  });

  it('firstDueAt should place each tenant at the same point of the interval after the rebuild, the tenants spread evenly over it', () => {
    const tenants = Array.from({ length: 1_000 }, (_, i) => `tenant-${i}`);
    const tenths = new Array<number>(10).fill(0);
    for (const tenantId of tenants) {
      const due = firstDueAt(tenantId, INTERVAL_MS, NOW);
      expect(due).toBeGreaterThanOrEqual(NOW);
      expect(due).toBeLessThan(NOW + INTERVAL_MS);
      // The same on every replica, and at any later look.
      expect(firstDueAt(tenantId, INTERVAL_MS, NOW)).toBe(due);
      const tenth = Math.floor(((due - NOW) / INTERVAL_MS) * 10);
      tenths[tenth] = (tenths[tenth] ?? 0) + 1;
    }
    for (const count of tenths) {
      expect(count).toBeGreaterThan(50);
      expect(count).toBeLessThan(150);
    }
  });
});

describe('classifyFailure', () => {
  it('classifyFailure should tell setup errors, throttling and transient failures apart', () => {
    expect(classifyFailure('DEFENDER_INVALID_SECRET')).toBe('setup');
    expect(classifyFailure('DEFENDER_CONSENT_MISSING')).toBe('setup');
    expect(classifyFailure('SECRET_KEY_UNKNOWN')).toBe('setup');
    expect(classifyFailure('DEFENDER_THROTTLED')).toBe('throttled');
    expect(classifyFailure('DEFENDER_UNAVAILABLE')).toBe('transient');
    expect(classifyFailure('UNEXPECTED')).toBe('transient');
  });

  it("classifyFailure should count a secret this process's key does not open as the process's fault, not the tenant's", () => {
    expect(classifyFailure('SECRET_UNREADABLE')).toBe('local');
  });

  it("classifyFailure should count a bad stored secret, one the process's key opens others beside, as the tenant's setup failure", () => {
    expect(classifyFailure('SECRET_RECORD_UNREADABLE')).toBe('setup');
  });
});

describe('failureKindOf', () => {
  it("failureKindOf should count a fault of Redis or Kafka as the replica's dependency's, not the tenant's", () => {
    // What the shared call limiter (Bottleneck) and the quota gate reject a call with when Redis is out of memory.
    expect(failureKindOf(new ReplyError("OOM command not allowed when used memory > 'maxmemory'."))).toBe(
      'infrastructure',
    );
    expect(failureKindOf(new Error('Connection is closed.'))).toBe('infrastructure');
    const kafka = Object.assign(new Error('There is no leader for this topic-partition'), {
      name: 'KafkaJSProtocolError',
      retriable: true,
    });
    expect(failureKindOf(kafka)).toBe('infrastructure');
  });

  it('failureKindOf should keep classifying the tenant’s own failures and the process’s by their code', () => {
    expect(failureKindOf(new DefenderError(DefenderErrorCode.UNAVAILABLE, 'answered 503'))).toBe('transient');
    expect(failureKindOf(new DefenderError(DefenderErrorCode.THROTTLED, 'answered 429'))).toBe('throttled');
    expect(failureKindOf(new Error('socket hang up'))).toBe('transient');
    expect(failureKindOf(new UrsError('SECRET_UNREADABLE', 'wrong key', { infrastructure: true }))).toBe(
      'local',
    );
  });
});

describe('backoffUntil', () => {
  const base = { startedAt: 0, now: 1_000, intervalMs: 600_000, maxBackoffMs: 3_600_000 };

  it('backoffUntil should double the wait after each setup failure, from one interval to the cap', () => {
    const waits = [1, 2, 3, 4, 5, 40].map((failures) => backoffUntil({ ...base, kind: 'setup', failures }));
    expect(waits).toEqual([600_000, 1_200_000, 2_400_000, 3_600_000, 3_600_000, 3_600_000]);
  });

  it('backoffUntil should never wait less than one interval, even under a smaller cap', () => {
    expect(backoffUntil({ ...base, maxBackoffMs: 1_000, kind: 'setup', failures: 3 })).toBe(600_000);
  });

  it('backoffUntil should delay a throttled tenant by Retry-After or a minute, at most an hour', () => {
    expect(backoffUntil({ ...base, kind: 'throttled', failures: 1 })).toBe(61_000);
    expect(backoffUntil({ ...base, kind: 'throttled', failures: 1, retryAfterMs: 120_000 })).toBe(121_000);
    expect(backoffUntil({ ...base, kind: 'throttled', failures: 1, retryAfterMs: 9_000_000 })).toBe(
      3_601_000,
    );
  });

  it("backoffUntil should try a throttled tenant again after its quota's block ends, also past its interval", () => {
    // A 429's Retry-After of an hour for a tenant polled every 10 minutes: a try at 10 minutes would only
    // find the block and end at once, throttled, again.
    expect(backoffUntil({ ...base, kind: 'throttled', failures: 1, retryAfterMs: 3_000_000 })).toBe(
      3_001_000,
    );
  });

  it('backoffUntil should keep the normal schedule after a transient failure', () => {
    expect(backoffUntil({ ...base, kind: 'transient', failures: 3 })).toBeNull();
  });
});

describe('nextStreak', () => {
  it('nextStreak should count failures of one kind in a row, and start again at 1 when the kind changes', () => {
    expect(nextStreak({ failures: 0 }, 'throttled')).toEqual({ failures: 1, kind: 'throttled' });
    expect(nextStreak({ failures: 4, kind: 'throttled' }, 'throttled')).toEqual({
      failures: 5,
      kind: 'throttled',
    });
    expect(nextStreak({ failures: 4, kind: 'throttled' }, 'transient')).toEqual({
      failures: 1,
      kind: 'transient',
    });
    expect(nextStreak({ failures: 4, kind: 'throttled' }, 'setup')).toEqual({ failures: 1, kind: 'setup' });
  });

  it('nextStreak should leave the streak as it is for a fault of this process or of Redis or Kafka', () => {
    expect(nextStreak({ failures: 3, kind: 'setup' }, 'local')).toEqual({ failures: 3, kind: 'setup' });
    expect(nextStreak({ failures: 3, kind: 'setup' }, 'infrastructure')).toEqual({
      failures: 3,
      kind: 'setup',
    });
  });

  it('nextStreak should go on with a streak an older poller stored without its kind', () => {
    expect(nextStreak({ failures: 3 }, 'setup')).toEqual({ failures: 4, kind: 'setup' });
  });
});

describe('transientRetryAt', () => {
  it('transientRetryAt should wait 2, 4, 8 … minutes after the failure, never more than an interval', () => {
    const day = 86_400_000;
    const waits = [1, 2, 3, 4].map(
      (failures) => transientRetryAt(failures, 1_000, day, 60_000, () => 0.5) - 1_000,
    );
    expect(waits).toEqual([120_000, 240_000, 480_000, 960_000]);
    expect(transientRetryAt(40, 1_000, day, 60_000, () => 0.5)).toBe(1_000 + day);
    expect(transientRetryAt(1, 1_000, 600_000, 60_000, () => 0.5)).toBe(121_000);
    expect(transientRetryAt(5, 1_000, 600_000, 60_000, () => 0.5)).toBe(601_000);
  });

  it('transientRetryAt should spread the tenants of one outage by ±20 %', () => {
    expect(transientRetryAt(1, 0, 86_400_000, 60_000, () => 0)).toBe(96_000);
    expect(transientRetryAt(1, 0, 86_400_000, 60_000, () => 1)).toBe(144_000);
  });
});

describe('withoutLocalBackoff', () => {
  const backedOff = { failures: 4, lastStartedAt: 1_000, notBefore: 9_000_000, failedRevision: 1 };

  it("withoutLocalBackoff should drop a backoff and its streak when the tenant's status names this process's own fault", () => {
    expect(withoutLocalBackoff(backedOff, 'SECRET_UNREADABLE')).toEqual({
      failures: 0,
      lastStartedAt: 1_000,
      failedRevision: 1,
    });
    expect(dueAt(withoutLocalBackoff(backedOff, 'SECRET_UNREADABLE'), 600_000, 1)).toBe(601_000);
  });

  it("withoutLocalBackoff should keep a backoff for the tenant's own failure, or with no code to tell", () => {
    expect(withoutLocalBackoff(backedOff, 'DEFENDER_INVALID_SECRET')).toBe(backedOff);
    expect(withoutLocalBackoff(backedOff, 'SECRET_KEY_UNKNOWN')).toBe(backedOff);
    expect(withoutLocalBackoff(backedOff, 'SECRET_RECORD_UNREADABLE')).toBe(backedOff);
    expect(withoutLocalBackoff(backedOff, undefined)).toBe(backedOff);
    expect(withoutLocalBackoff(backedOff, null)).toBe(backedOff);
  });
});
