import { silentLogger } from '@urs/logging';
import { drainWithin } from '../src/drain';

// Close's wait for the messages in flight, on a clock the test moves.
describe('drainWithin', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  /** A drain of one message whose handler never returns, aborted into `aborts`; answers its outcome so far. */
  function stuckDrain(drainTimeoutMs: number) {
    const aborts: number[] = [];
    let outcome: boolean | undefined;
    const running = new Set([new Promise<void>(() => undefined)]);
    void drainWithin({
      running,
      drainTimeoutMs,
      abort: () => aborts.push(Date.now()),
      log: silentLogger,
    }).then((settled) => (outcome = settled));
    return { aborts, outcome: () => outcome };
  }

  it('should wait drainTimeoutMs before aborting a handler, then as long again before giving it up', async () => {
    const started = Date.now();
    const drain = stuckDrain(500);
    await jest.advanceTimersByTimeAsync(499);
    expect(drain.aborts).toEqual([]);
    await jest.advanceTimersByTimeAsync(1);
    expect(drain.aborts).toEqual([started + 500]);
    await jest.advanceTimersByTimeAsync(499);
    expect(drain.outcome()).toBeUndefined();
    await jest.advanceTimersByTimeAsync(1);
    expect(drain.outcome()).toBe(false);
  });

  it('should end as soon as a handler aborted returns, without waiting out the second drainTimeoutMs', async () => {
    let finish: () => void = () => undefined;
    const running = new Set([new Promise<void>((resolve) => (finish = resolve))]);
    let outcome: boolean | undefined;
    void drainWithin({ running, drainTimeoutMs: 500, abort: () => finish(), log: silentLogger }).then(
      (settled) => (outcome = settled),
    );
    await jest.advanceTimersByTimeAsync(500);
    expect(outcome).toBe(true);
    expect(jest.getTimerCount()).toBe(0);
  });
});
