import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';
import { lastOffsets, readTopicUpTo, topicOffsets } from '@urs/bus';
import { vmsRecordKeyParts } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import {
  errorCode,
  errorMessage,
  keepRenewing,
  retryDelayMs,
  retryPolicy,
  retryThroughOutage,
  sleep,
  unlessAborted,
  UrsError,
  type RetryPolicy,
} from '@urs/resilience';
import type { PublishedRebuild, VmsKeyState } from '@urs/store';

/** One record's key on `vms.risk-scores` (`{tenantId}/{deviceId}`), whether it is a tombstone, and when written. */
export interface VmsKey {
  key: string;
  live: boolean;
  /** The record's timestamp (epoch ms): a tombstone's dates the device's tombstone marker. */
  at?: number;
}

/**
 * Reads `vms.risk-scores` to the end it had when the read started, handing on the keys of each fetched
 * batch (`onKeys`, awaited before the next batch is fetched) and never a value. Resolves how many records
 * were read; rejects with `signal`'s reason once it aborts.
 */
export type VmsKeysReader = (
  onKeys: (keys: VmsKey[]) => Promise<void>,
  signal?: AbortSignal,
) => Promise<number>;

/** Whether a record of `vms.risk-scores` is live, and its timestamp when Kafka gives a readable one. */
function keyState(message: { value: Buffer | null; timestamp: string }): Omit<VmsKey, 'key'> {
  const at = Number(message.timestamp);
  return { live: message.value !== null, ...(Number.isFinite(at) && at > 0 ? { at } : {}) };
}

/** `VmsKeysReader` on Kafka: a consumer group of its own (`{groupPrefix}.rebuild.…`), deleted afterwards. */
export function vmsKeysReader(
  kafka: Kafka,
  topic: string,
  groupPrefix: string,
  logger: Logger,
  timeoutMs: number,
): VmsKeysReader {
  return async (onKeys, signal) => {
    // A topic with no record (a new install) costs this one request.
    const targets = lastOffsets(await topicOffsets(kafka, topic, { logger }));
    let records = 0;
    await readTopicUpTo(
      kafka,
      topic,
      targets,
      groupPrefix,
      timeoutMs,
      async (messages) => {
        records += messages.length;
        await onKeys(
          messages.flatMap((message) =>
            message.key ? [{ key: message.key.toString('utf8'), ...keyState(message) }] : [],
          ),
        );
      },
      signal,
    );
    return records;
  };
}

export interface PublishedRebuilderDeps {
  published: PublishedRebuild;
  readKeys: VmsKeysReader;
  logger: Logger;
  /** How long one replica holds the right to rebuild unless renewed, ms (default 30 s). */
  lockMs?: number;
  /** How often a replica waiting for another's rebuild looks again, ms (default 250). */
  waitMs?: number;
  /** The waits after failed rebuilds before this replica reads the topic again (default 1 s doubling up to 1 min). */
  backoff?: RetryPolicy;
}

export interface PublishedRebuilder {
  /**
   * Resolves once the publisher's record of what VMS holds is whole: at once when the rebuild's marker is
   * set; otherwise after rebuilding it from `vms.risk-scores` on this replica, or waiting for the replica
   * that does (this replica's callers share one rebuild or one wait). What tombstones (a completed cycle, a
   * tenant's deletion) waits on it: devices missing from a record Redis lost would never be tombstoned.
   * Rejects with an infrastructure fault (`REBUILD_FAILED`: the message waiting on it is held, never
   * dead-lettered) when the read or Redis fails, or after a failure until its backoff passed; with
   * `signal`'s reason once it aborted (the rebuild goes on for the others).
   */
  ensure(signal?: AbortSignal): Promise<void>;
  /**
   * Runs `ensure` at once, then every `intervalMs`, so a Redis wiped while running is rebuilt before a
   * cycle has to wait for it; a failure is tried again through an outage (retryThroughOutage). Stops on
   * `signal`.
   */
  watch(intervalMs: number, signal: AbortSignal): Promise<void>;
  /** Stops a rebuild under way (its read) and gives its lock back; `ensure` rejects from then on. */
  close(): Promise<void>;
}

const DEFAULT_LOCK_MS = 30_000;
const DEFAULT_WAIT_MS = 250;
const DEFAULT_BACKOFF = retryPolicy({ maxAttempts: Infinity, initialDelayMs: 1_000, maxDelayMs: 60_000 });

/** This replica's rebuild under way: its token (the lock's value) and what stops its read (besides `close`). */
interface Rebuilding {
  token: string;
  stop: AbortController;
}

const lost = (): UrsError =>
  new UrsError(
    'REBUILD_LOST',
    'the rebuild lock lapsed before the rebuild was done (Redis wiped again, or unreachable)',
    { canRetry: true },
  );

/**
 * Kafka is the record of what VMS holds; Redis keeps the publisher's copy (which devices it published, the
 * cycle each was last seen in). A marker key says the copy is whole: when it is missing (a new Redis, a
 * flush, a failover to an empty replica), one rebuild at a time (a lock holding its token, renewed) reads
 * the keys of `vms.risk-scores` to its end and writes back, a fetched batch at a time, every device whose
 * last record is not a tombstone, and the tombstone marker of a device whose last record is a recent tombstone
 * (`PublishedRebuild.restore`), then sets the marker. A rebuild whose lock
 * lapsed (Redis wiped again meanwhile) stops reading and writes nothing more; the next starts over with a
 * new token. Restored devices count as seen in no cycle: absent from `URS_TOMBSTONE_AFTER_CYCLES` completed
 * cycles (with the hold), they are tombstoned as any device gone from the fleet; listed again, they are
 * seen again. No value is kept, only the keys of one fetched batch.
 */
export function createPublishedRebuilder(deps: PublishedRebuilderDeps): PublishedRebuilder {
  const log = deps.logger.child({ component: 'rebuild' });
  const lockMs = deps.lockMs ?? DEFAULT_LOCK_MS;
  const waitMs = deps.waitMs ?? DEFAULT_WAIT_MS;
  const backoff = deps.backoff ?? DEFAULT_BACKOFF;
  const closing = new AbortController();
  // This replica's one wait for the marker (rebuilding, or waiting for another replica), shared by its callers.
  let untilMarked: Promise<void> | undefined;
  let rebuilding: Rebuilding | undefined;
  let failures = 0;
  let failed: { error: unknown; until: number } | undefined;

  /** Writes one fetched batch's keys, the last record of each key winning, tenant by tenant. */
  async function restoreBatch(
    token: string,
    keys: VmsKey[],
    counts: { restored: number; ofDeletedTenants: number },
  ): Promise<void> {
    const byTenant = new Map<string, Map<string, VmsKeyState>>();
    for (const { key, live, at } of keys) {
      const parts = vmsRecordKeyParts(key);
      if (parts === null) continue;
      const { tenantId, deviceId } = parts;
      const devices = byTenant.get(tenantId) ?? new Map<string, VmsKeyState>();
      byTenant.set(tenantId, devices.set(deviceId, { deviceId, live, ...(at === undefined ? {} : { at }) }));
    }
    await Promise.all(
      [...byTenant].map(async ([tenantId, devices]) => {
        const states = [...devices.values()];
        const restored = await deps.published.restore(token, tenantId, states);
        if (restored === null) counts.ofDeletedTenants += states.length;
        else counts.restored += restored;
      }),
    );
  }

  /** Rebuilds holding the lock for `rebuild.token` (taken by the caller); gives it back if it fails or stops. */
  async function rebuild({ token, stop }: Rebuilding): Promise<void> {
    const started = Date.now();
    const stopRenewing = keepRenewing(
      () => deps.published.renewRebuild(token, lockMs),
      Math.max(10, Math.floor(lockMs / 3)),
      {
        onLost: () => stop.abort(lost()),
        onError: (error) => log.warn('rebuild lock not renewed', { reason: errorMessage(error) }),
      },
    );
    const counts = { restored: 0, ofDeletedTenants: 0 };
    try {
      const records = await deps.readKeys(
        (keys) => restoreBatch(token, keys, counts),
        AbortSignal.any([stop.signal, closing.signal]),
      );
      if (!(await deps.published.markRebuilt(token, new Date()))) throw lost();
      log.info('published devices rebuilt from vms.risk-scores', {
        records,
        ...counts,
        ms: Date.now() - started,
      });
    } catch (error) {
      await deps.published.releaseRebuild(token).catch(() => undefined);
      throw error;
    } finally {
      stopRenewing();
    }
  }

  /** Rebuilds on this replica when it gets the lock, else waits for the marker another replica sets. */
  async function rebuildOrWait(): Promise<void> {
    for (;;) {
      if (await deps.published.isRebuilt()) return;
      closing.signal.throwIfAborted();
      // Not read again back to back after a failure (a topic Kafka refuses, a read too slow).
      if (failed && Date.now() < failed.until) throw failed.error;
      const mine: Rebuilding = { token: randomUUID(), stop: new AbortController() };
      if (!(await deps.published.takeRebuild(mine.token, lockMs))) {
        await sleep(waitMs, closing.signal);
        continue;
      }
      rebuilding = mine;
      try {
        await rebuild(mine);
        failures = 0;
        failed = undefined;
      } catch (error) {
        // Lost (Redis wiped again): started over at once. Stopped: the replica closes.
        if (closing.signal.aborted || errorCode(error) !== 'REBUILD_LOST') {
          failures++;
          failed = {
            error,
            until: Date.now() + Math.max(backoff.initialDelayMs, retryDelayMs(backoff, failures)),
          };
          throw error;
        }
        log.warn('rebuild lock lapsed while rebuilding: rebuilt again', { reason: errorMessage(error) });
      } finally {
        if (rebuilding === mine) rebuilding = undefined;
      }
    }
  }

  /** Joins this replica's wait for the marker (started if none is under way); rejects with its failure. */
  async function untilRebuilt(signal?: AbortSignal): Promise<void> {
    if (await deps.published.isRebuilt()) return;
    // A rebuild whose token no longer holds the lock (Redis wiped again) is not joined: stopped, it starts over.
    const current = rebuilding;
    if (current && !(await deps.published.renewRebuild(current.token, lockMs))) current.stop.abort(lost());
    untilMarked ??= rebuildOrWait().finally(() => {
      untilMarked = undefined;
    });
    await (signal ? unlessAborted(untilMarked, signal) : untilMarked);
  }

  /**
   * A rebuild that failed (Kafka refused the read, or it was too slow) is handed on as an infrastructure
   * fault: the batch or deletion waiting on it is not at fault, and is held until the rebuild is done rather
   * than counted against its retries and dead-lettered.
   */
  async function ensure(signal?: AbortSignal): Promise<void> {
    try {
      await untilRebuilt(signal);
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new UrsError(
        'REBUILD_FAILED',
        `the published devices could not be rebuilt from vms.risk-scores: ${errorMessage(error)}`,
        { canRetry: true, infrastructure: true, cause: error },
      );
    }
  }

  return {
    ensure,
    async watch(intervalMs, signal) {
      while (!signal.aborted) {
        try {
          await retryThroughOutage(() => untilRebuilt(signal), {
            what: 'rebuilding the published devices from vms.risk-scores',
            log,
            signal,
          });
        } catch (error) {
          // One that waiting does not mend (Kafka refused the read): tried again at the next check after its
          // backoff, and what tombstones waits until it is done.
          if (signal.aborted) break;
          log.error('published devices not rebuilt from vms.risk-scores', {
            code: errorCode(error),
            reason: errorMessage(error),
          });
        }
        await sleep(intervalMs, signal);
      }
    },
    async close() {
      closing.abort(
        new UrsError('STOPPING', 'the publisher is stopping: rebuild stopped', { canRetry: true }),
      );
      await untilMarked?.catch(() => undefined);
    },
  };
}
