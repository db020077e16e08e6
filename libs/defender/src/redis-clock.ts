import type { Redis } from 'ioredis';

/**
 * Redis's clock as read from this process: the process's clock plus the offset of Redis's `TIME` from it. Every
 * process sharing the limiter must count its jobs' expirations on one clock; the hosts' clocks may be seconds
 * apart, Redis has one. The offset holds while the process's clock runs at the rate of Redis's; `measure` is
 * called again every few seconds, so a clock set or drifting moves it then.
 */
export interface RedisClock {
  /** Redis's time now, in milliseconds since the epoch (this process's clock until the first measurement). */
  now(): number;
  /**
   * Measures the offset again: Redis read its clock within the round trip of `TIME`, taken to be its middle,
   * so the offset is off by at most half the round trip. A failure keeps the last offset (Redis away).
   */
  measure(): Promise<void>;
}

export function redisClock(redis: Redis): RedisClock {
  let offsetMs = 0;
  return {
    now: () => Date.now() + offsetMs,
    async measure() {
      const sent = Date.now();
      let time: number[];
      try {
        time = await redis.time(); // seconds and microseconds, as strings
      } catch {
        return;
      }
      const answered = Date.now();
      const redisMs = Number(time[0]) * 1_000 + Math.floor(Number(time[1]) / 1_000);
      offsetMs = redisMs - Math.round((sent + answered) / 2);
    },
  };
}
