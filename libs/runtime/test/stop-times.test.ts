import { stopTimes } from '../src/stop-times';

describe('stopTimes', () => {
  it('stopTimes should give each of a runner’s two drain waits a third of the shutdown timeout', () => {
    expect(stopTimes(15_000).drainTimeoutMs).toBe(5_000);
    expect(stopTimes(2_000).drainTimeoutMs).toBe(666);
    expect(stopTimes(60_000).drainTimeoutMs).toBe(20_000);
  });

  it('stopTimes should wait for Redis’s QUIT a sixth of the shutdown timeout, at most 2 s', () => {
    expect(stopTimes(15_000).redisQuitTimeoutMs).toBe(2_000);
    expect(stopTimes(3_000).redisQuitTimeoutMs).toBe(500);
  });

  it('stopTimes should leave at least the last third of the timeout to the rest of the close', () => {
    for (const timeoutMs of [2_000, 2_001, 7_777, 15_000, 600_000]) {
      const times = stopTimes(timeoutMs);
      expect(2 * times.drainTimeoutMs).toBeLessThanOrEqual((2 * timeoutMs) / 3);
      expect(times.redisQuitTimeoutMs).toBeLessThanOrEqual(timeoutMs / 6);
    }
  });
});
