import { ReplyError } from 'ioredis';
import { UrsError } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import { type LogLine, capturingLogger } from '@urs/testkit';
import { createAttemptFailures } from '../src/attempt-failures';
import { sampleOf } from './support/scheduler';

const oom = (): Error => new ReplyError("OOM command not allowed when used memory > 'maxmemory'.");

function failures(random: () => number) {
  const lines: LogLine[] = [];
  const metrics = new Registry();
  const cyclesTotal = metrics.counter('urs_poll_cycles_total', 'Polling cycles, by outcome.');
  const attempts = createAttemptFailures({
    log: capturingLogger(lines),
    cyclesTotal,
    recheckMs: 1_000,
    maxWaitMs: 60_000,
    random,
  });
  return { attempts, lines, metrics };
}

describe('createAttemptFailures', () => {
  it('failed should wait from URS_POLL_RECHECK_MS, doubling up to a minute, with full jitter above the floor', () => {
    const { attempts } = failures(() => 0.999_999);
    const waits = Array.from({ length: 9 }, () => attempts.failed('a', oom(), false));
    expect(waits.map((ms) => Math.round(ms / 1_000))).toEqual([2, 3, 5, 9, 17, 33, 60, 60, 60]);
    const low = failures(() => 0).attempts;
    expect([1, 2, 3].map(() => low.failed('a', oom(), false))).toEqual([1_000, 1_000, 1_000]);
  });

  it("failed should keep each tenant's streak, and succeeded end it", () => {
    const { attempts } = failures(() => 0.999_999);
    attempts.failed('a', oom(), false);
    attempts.failed('a', oom(), false);
    expect(Math.round(attempts.failed('b', oom(), false) / 1_000)).toBe(2);
    attempts.succeeded('a');
    expect(Math.round(attempts.failed('a', oom(), false) / 1_000)).toBe(2);
  });

  it('failed should warn once per outage, count attempts outside a counted cycle, and succeeded say the end', () => {
    const { attempts, lines, metrics } = failures(Math.random);
    for (const tenantId of ['a', 'b', 'c']) attempts.failed(tenantId, oom(), false);
    attempts.failed('a', oom(), true);
    expect(lines.filter((line) => line.level === 'warn')).toHaveLength(1);
    expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="infrastructure"}')).toBe(3);
    attempts.succeeded('b');
    attempts.succeeded('c');
    expect(lines.filter((line) => line.level === 'info').map((line) => line.message)).toEqual([
      'poll attempts go through again',
    ]);
    attempts.failed('a', oom(), false);
    expect(lines.filter((line) => line.level === 'warn')).toHaveLength(2);
  });

  it('failed should log any other failure as an error, and not count it', () => {
    const { attempts, lines, metrics } = failures(Math.random);
    attempts.failed('a', new UrsError('UNEXPECTED', 'a bug'), false);
    expect(lines).toMatchObject([
      { level: 'error', message: 'poll attempt failed', tenantId: 'a', code: 'UNEXPECTED' },
    ]);
    expect(sampleOf(metrics, 'urs_poll_cycles_total{outcome="infrastructure"}')).toBeUndefined();
  });
});
