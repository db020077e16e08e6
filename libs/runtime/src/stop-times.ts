/**
 * How a graceful stop shares URS_SHUTDOWN_TIMEOUT_MS (`shutdownTimeoutMs`) between its steps, so that a stop
 * whose steps each keep to their share ends within it, with exit code 0. The stop closes the runners first:
 * each waits up to `drainTimeoutMs` for its messages in flight, aborts them, and waits as long again for
 * their handlers to return (ConsumerRunnerOptions.drainTimeoutMs, ordering 'key'). Those two waits take two
 * thirds of the time at most; the last third is for the rest: the runners' last commit and leaving their
 * groups, the service's own closers, the publisher, Redis and the health server.
 */
export interface StopTimes {
  /** Each of a runner's two waits on close, ms: a third of the shutdown timeout (5000 of the default 15000). */
  drainTimeoutMs: number;
  /**
   * How long Redis's QUIT is waited for before the connection is dropped, ms: a sixth of the shutdown timeout,
   * at most 2000 (Redis answers at once when it is there; the wait only matters when it is away).
   */
  redisQuitTimeoutMs: number;
}

export function stopTimes(shutdownTimeoutMs: number): StopTimes {
  return {
    drainTimeoutMs: Math.max(1, Math.floor(shutdownTimeoutMs / 3)),
    redisQuitTimeoutMs: Math.max(1, Math.min(2_000, Math.floor(shutdownTimeoutMs / 6))),
  };
}
