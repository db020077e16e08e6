import type { Logger } from '@urs/logging';
import {
  defenderSettings,
  readInt,
  readString,
  secretKeyConfig,
  type DefenderSettings,
  type Env,
  type SecretKeyConfig,
} from '@urs/config';

/** The poller's own settings, and how it reaches Defender (`defenderSettings`). */
export interface PollerConfig extends DefenderSettings {
  /**
   * Milliseconds in one "minute" of `pollIntervalMinutes`. Env `URS_POLL_INTERVAL_UNIT_MS`, default 60000.
   * A setting for tests, the demo and the benchmark, not production: they shorten every interval with it (10
   * minutes of 300 ms = 3 s) while registrations keep the 10–1440 minute rule. Below a minute the start
   * warns (`warnOfShortIntervalUnit`).
   */
  intervalUnitMs: number;
  /**
   * How long a poller holds a tenant without renewing, in milliseconds. Env `URS_POLL_LEASE_MS`, default
   * 30000. A killed poller's tenants are taken over within this time; renewed every third of it.
   */
  leaseMs: number;
  /** Longest a cycle may stay open before the publisher closes it, in ms. Env `URS_CYCLE_MAX_MS`, default 3600000. */
  maxCycleMs: number;
  /** Cycles this process runs at once (others wait their turn). Env `URS_POLL_MAX_CONCURRENT`, default 32. */
  maxConcurrentCycles: number;
  /**
   * Longest a call of a cycle's listing waits for the tenant's API quota, and in all for a 429's
   * Retry-After, in ms. Env `URS_POLL_MAX_QUOTA_WAIT_MS`, default 60000. A longer wait (the hourly quota
   * spent, a Retry-After of minutes) ends the cycle THROTTLED at once, tried again when the wait is over:
   * waiting inside the cycle held one of the `maxConcurrentCycles` places for up to an hour. A minute rides
   * out Microsoft's per-minute windows and their 429s, and is a tenth of the shortest interval (10 minutes).
   */
  maxQuotaWaitMs: number;
  /** Scheduler tick, ms: how soon a due tenant or a free lease is noticed. Env `URS_POLL_TICK_MS`, default 200. */
  tickMs: number;
  /** Wait before trying again a tenant whose lease another poller holds, ms. Env `URS_POLL_RECHECK_MS`, default 1000. */
  recheckMs: number;
  /** Cap of the backoff after authentication failures, ms. Env `URS_POLL_MAX_BACKOFF_MS`, default 86400000 (a day). */
  maxBackoffMs: number;
  /**
   * Longest wait at start for the tenant table to read `urs.tenants` to its end before polling anyway, in ms
   * (a record whose dead letter cannot be written holds the reader). Env `URS_POLL_CATCHUP_TIMEOUT_MS`, default 30000.
   */
  catchUpTimeoutMs: number;
  /** Devices per `urs.device-batches` message. Env `URS_POLL_BATCH_SIZE`, default 500 (the maximum). */
  batchSize: number;
  /**
   * Devices per page of a tenant's listing (`$top` of `/api/machines`). Env `URS_POLL_PAGE_SIZE`, default
   * 10000 (the API's maximum: fewest calls of the quota), 100–10000. A smaller page arrives sooner on a slow
   * link: each page must arrive whole within `URS_DEFENDER_REQUEST_TIMEOUT_MS` (a page that does not is
   * asked again with half as many devices, down to 500, for the rest of the listing).
   */
  pageSize: number;
  /** This replica's id (lease holder, consumer group). Env `URS_INSTANCE_ID`, default `poller-<pid>`. */
  instanceId: string;
  /**
   * Start of this replica's own consumer group of `urs.tenants` (the replica's id is appended). Env
   * `URS_CONSUMER_GROUP`, default `{URS_TOPIC_PREFIX}urs.poller.tenants`.
   */
  groupPrefix: string;
  secretKeys: SecretKeyConfig;
}

/** A minute, ms: the unit of registrations' `pollIntervalMinutes`, and `URS_POLL_INTERVAL_UNIT_MS`'s default. */
const MINUTE_MS = 60_000;

export function pollerConfig(env: Env): PollerConfig {
  return {
    intervalUnitMs: readInt(env, 'URS_POLL_INTERVAL_UNIT_MS', { fallback: MINUTE_MS, min: 1 }),
    leaseMs: readInt(env, 'URS_POLL_LEASE_MS', { fallback: 30_000, min: 300 }),
    maxCycleMs: readInt(env, 'URS_CYCLE_MAX_MS', { fallback: 3_600_000, min: 1_000 }),
    maxConcurrentCycles: readInt(env, 'URS_POLL_MAX_CONCURRENT', { fallback: 32, min: 1, max: 10_000 }),
    maxQuotaWaitMs: readInt(env, 'URS_POLL_MAX_QUOTA_WAIT_MS', { fallback: 60_000, min: 0, max: 3_600_000 }),
    tickMs: readInt(env, 'URS_POLL_TICK_MS', { fallback: 200, min: 10, max: 60_000 }),
    recheckMs: readInt(env, 'URS_POLL_RECHECK_MS', { fallback: 1_000, min: 10 }),
    maxBackoffMs: readInt(env, 'URS_POLL_MAX_BACKOFF_MS', { fallback: 86_400_000, min: 1_000 }),
    catchUpTimeoutMs: readInt(env, 'URS_POLL_CATCHUP_TIMEOUT_MS', { fallback: 30_000, min: 0 }),
    batchSize: readInt(env, 'URS_POLL_BATCH_SIZE', { fallback: 500, min: 1, max: 500 }),
    pageSize: readInt(env, 'URS_POLL_PAGE_SIZE', { fallback: 10_000, min: 100, max: 10_000 }),
    instanceId: readString(env, 'URS_INSTANCE_ID', `poller-${process.pid}`),
    groupPrefix: readString(
      env,
      'URS_CONSUMER_GROUP',
      `${readString(env, 'URS_TOPIC_PREFIX', '')}urs.poller.tenants`,
    ),
    secretKeys: secretKeyConfig(env),
    ...defenderSettings(env),
  };
}

/**
 * Warns, at the poller's start, of an interval unit below a minute. It shrinks every interval below the 10
 * minutes a registration may ask for: a unit of 1000 polls every tenant 60 times as often as registered,
 * against Microsoft's quotas for the tenant.
 */
export function warnOfShortIntervalUnit(
  settings: Pick<PollerConfig, 'intervalUnitMs'>,
  logger: Logger,
): void {
  const { intervalUnitMs } = settings;
  if (intervalUnitMs >= MINUTE_MS) return;
  const timesAsOften = Number((MINUTE_MS / intervalUnitMs).toFixed(1));
  logger.warn(
    `URS_POLL_INTERVAL_UNIT_MS is below a minute: tenants are polled ${timesAsOften} times as often as ` +
      "registered (a setting for tests and demos, not production: it spends the tenants' Defender API quotas)",
    { intervalUnitMs, timesAsOften },
  );
}
