import { ReplyError } from 'ioredis';
import { Registry } from '@urs/telemetry';
import { capturingLogger, type LogLine } from '@urs/testkit';
import { createHeldMessages } from '../src/held';

const oom = (): Error => new ReplyError('OOM command not allowed when used memory > maxmemory.');

/** Held messages on a clock the test moves (`clock.at`, ms). */
function heldMessages() {
  const lines: LogLine[] = [];
  const metrics = new Registry({ processMetrics: false });
  const clock = { at: 1_000_000 };
  const held = createHeldMessages({
    log: capturingLogger(lines),
    gauge: metrics.gauge('urs_consumer_held_messages', 'held'),
    labels: { group: 'g' },
    notReadyAfterMs: 30_000,
    logIntervalMs: 60_000,
    now: () => clock.at,
  });
  return { held, lines, metrics, clock };
}

describe('createHeldMessages', () => {
  it('should say it is stalled once messages have been held longer than notReadyAfterMs, and no more once none is', () => {
    const { held, clock, metrics } = heldMessages();
    const first = held.hold(oom(), { offset: '1' });
    clock.at += 20_000;
    const second = held.hold(oom(), { offset: '2' });
    expect(metrics.expose()).toContain('urs_consumer_held_messages{group="g"} 2');
    clock.at += 10_000;
    expect(held.isStalled()).toBe(false);
    clock.at += 1;
    // Counted from the first message held: the outage, not each message, is what is timed.
    expect(held.isStalled()).toBe(true);
    first.release();
    expect(held.isStalled()).toBe(true);
    second.release();
    second.release();
    expect(held.isStalled()).toBe(false);
    expect(held.count).toBe(0);
    expect(metrics.expose()).toContain('urs_consumer_held_messages{group="g"} 0');
    held.hold(oom(), {});
    expect(held.isStalled()).toBe(false);
  });

  it('should warn at most once per logIntervalMs however often held messages fail, and tell the end of a warned outage', () => {
    const { held, clock, lines } = heldMessages();
    const hold = held.hold(oom(), { offset: '1' });
    for (let attempt = 0; attempt < 100; attempt++) {
      clock.at += 500;
      hold.failedAgain(oom(), { offset: '1' });
    }
    clock.at += 10_000;
    hold.failedAgain(oom(), { offset: '1' });
    hold.release();
    expect(lines.map((line) => [line.level, line.message])).toEqual([
      ['warn', 'messages held: a dependency failed; retried until it is back, not dead-lettered'],
      ['warn', 'messages held: a dependency failed; retried until it is back, not dead-lettered'],
      ['info', 'no message held any more'],
    ]);
    expect(lines[0]).toMatchObject({ offset: '1', held: 1, heldForMs: 0, code: 'UNEXPECTED' });
    expect(lines[0]?.['reason']).toContain('OOM');
    expect(lines[1]).toMatchObject({ heldForMs: 60_000 });
    expect(lines[2]).toMatchObject({ heldForMs: 60_000 });
  });

  it("should warn of each reason in its own words, one reason's warning not hiding another's", () => {
    const { held, clock, lines } = heldMessages();
    const refused = held.hold(oom(), { offset: '1' }, 'dead-letter-refused');
    clock.at += 1_000;
    refused.failedAgain(oom(), { offset: '1' }, 'dead-letter-refused');
    const dependency = held.hold(oom(), { offset: '2' });
    const busy = held.hold(oom(), { offset: '3' }, 'dead-letter-busy');
    expect(lines.map((line) => [line.message, line['holdReason']])).toEqual([
      [
        'messages held: Kafka refused their dead letter; written again until it takes it, their handler not run again',
        'dead-letter-refused',
      ],
      ['messages held: a dependency failed; retried until it is back, not dead-lettered', 'dependency'],
      [
        'messages held: another process is writing their dead letter; held until it is written or its claim lapses',
        'dead-letter-busy',
      ],
    ]);
    for (const hold of [refused, dependency, busy]) hold.release();
  });

  it('should count messages held while the service catches up at its start, and not let them alone make it not ready', () => {
    const { held, clock, lines, metrics } = heldMessages();
    const starting = held.hold(oom(), { offset: '1' }, 'catching-up');
    clock.at += 60_000;
    expect(held.isStalled()).toBe(false);
    expect(held.count).toBe(1);
    expect(metrics.expose()).toContain('urs_consumer_held_messages{group="g"} 1');
    expect(lines[0]).toMatchObject({ level: 'warn', holdReason: 'catching-up' });
    // A dependency's fault alongside is timed from its own start.
    const outage = held.hold(oom(), { offset: '2' });
    clock.at += 30_001;
    expect(held.isStalled()).toBe(true);
    outage.release();
    expect(held.isStalled()).toBe(false);
    // The held message failing again on a dependency's fault counts from then; back to catching up, no more.
    starting.failedAgain(oom(), { offset: '1' });
    clock.at += 30_001;
    expect(held.isStalled()).toBe(true);
    starting.failedAgain(oom(), { offset: '1' }, 'catching-up');
    expect(held.isStalled()).toBe(false);
    starting.release();
    expect(held.count).toBe(0);
  });
});
