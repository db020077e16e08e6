import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';
import { lastOffsets, readTopicUpTo, topicOffsets } from '@urs/bus';
import type { Logger } from '@urs/logging';
import {
  canRetry,
  errorCode,
  errorMessage,
  keepRenewing,
  retryThroughOutage,
  sleep,
  UrsError,
} from '@urs/resilience';
import type { PublishedRebuild, VmsKeyState } from '@urs/store';

/** One record's key on `vms.risk-scores` (`{tenantId}/{deviceId}`) and whether it is a tombstone. */
export interface VmsKey {
  key: string;
  live: boolean;
}

/**
 * Reads `vms.risk-scores` to the end it had when the read started, handing on the keys of each fetched
 * batch (`onKeys`, awaited before the next batch is fetched) and never a value. Resolves how many records
 * were read.
 */
export type VmsKeysReader = (onKeys: (keys: VmsKey[]) => Promise<void>) => Promise<number>;

/** `VmsKeysReader` on Kafka: a consumer group of its own (`{groupPrefix}.rebuild.…`), deleted afterwards. */
export function vmsKeysReader(
  kafka: Kafka,
  topic: string,
  groupPrefix: string,
  logger: Logger,
  timeoutMs: number,
): VmsKeysReader {
  return async (onKeys) => {
    // A topic with no record (a new install) costs this one request.
    const targets = lastOffsets(await topicOffsets(kafka, topic, { logger }));
    let records = 0;
    await readTopicUpTo(kafka, topic, targets, groupPrefix, timeoutMs, async (messages) => {
      records += messages.length;
      await onKeys(
        messages.flatMap((message) =>
          message.key ? [{ key: message.key.toString('utf8'), live: message.value !== null }] : [],
        ),
      );
    });
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
}

export interface PublishedRebuilder {
  /**
   * Resolves once the publisher's record of what VMS holds is whole: at once when the rebuild's marker is
   * set; otherwise after rebuilding it from `vms.risk-scores` on this replica, or waiting for the replica
   * that does. What tombstones (a completed cycle, a tenant's deletion) waits on it: devices missing from
   * a record Redis lost would never be tombstoned. Rejects with a retryable error when the read or Redis
   * fails, or once `signal` aborted.
   */
  ensure(signal?: AbortSignal): Promise<void>;
  /**
   * Runs `ensure` at once, then every `intervalMs`, so a Redis wiped while running is rebuilt before a
   * cycle has to wait for it; a failure is tried again through an outage (retryThroughOutage). Stops on
   * `signal`.
   */
  watch(intervalMs: number, signal: AbortSignal): Promise<void>;
}

const DEFAULT_LOCK_MS = 30_000;
const DEFAULT_WAIT_MS = 250;

/**
 * Kafka is the record of what VMS holds; Redis keeps the publisher's copy (which devices it published, the
 * cycle each was last seen in). A marker key says the copy is whole: when it is missing (a new Redis, a
 * flush, a failover to an empty replica), one replica at a time (a lock it renews) reads the keys of
 * `vms.risk-scores` to its end and writes back, a fetched batch at a time, every device whose last record
 * is not a tombstone (`PublishedRebuild.restore`), then sets the marker. Restored devices count as seen in
 * no cycle: absent from `URS_TOMBSTONE_AFTER_CYCLES` completed cycles (with the hold), they are tombstoned
 * as any device gone from the fleet; listed again, they are seen again. No value is kept, only the keys of
 * one fetched batch.
 */
export function createPublishedRebuilder(deps: PublishedRebuilderDeps): PublishedRebuilder {
  const log = deps.logger.child({ component: 'rebuild' });
  const lockMs = deps.lockMs ?? DEFAULT_LOCK_MS;
  const waitMs = deps.waitMs ?? DEFAULT_WAIT_MS;
  const holder = randomUUID();
  let running: Promise<void> | undefined;

  /** Writes one fetched batch's keys, the last record of each key winning, tenant by tenant. */
  async function restoreBatch(
    keys: VmsKey[],
    counts: { restored: number; ofDeletedTenants: number },
  ): Promise<void> {
    const byTenant = new Map<string, Map<string, boolean>>();
    for (const { key, live } of keys) {
      const slash = key.indexOf('/');
      if (slash <= 0) continue;
      const tenantId = key.slice(0, slash);
      const devices = byTenant.get(tenantId) ?? new Map<string, boolean>();
      byTenant.set(tenantId, devices.set(key.slice(slash + 1), live));
    }
    await Promise.all(
      [...byTenant].map(async ([tenantId, devices]) => {
        const states: VmsKeyState[] = [...devices].map(([deviceId, live]) => ({ deviceId, live }));
        const restored = await deps.published.restore(tenantId, states);
        if (restored === null) counts.ofDeletedTenants += states.length;
        else counts.restored += restored;
      }),
    );
  }

  /** Rebuilds holding the right to (taken by the caller); gives it back if it fails. */
  async function rebuild(): Promise<void> {
    const started = Date.now();
    const stopRenewing = keepRenewing(
      () => deps.published.renewRebuild(holder, lockMs),
      Math.max(10, Math.floor(lockMs / 3)),
      {
        onLost: () => log.warn('rebuild lock lapsed while rebuilding'),
        onError: (error) => log.warn('rebuild lock not renewed', { reason: errorMessage(error) }),
      },
    );
    const counts = { restored: 0, ofDeletedTenants: 0 };
    try {
      const records = await deps.readKeys((keys) => restoreBatch(keys, counts));
      if (!(await deps.published.markRebuilt(holder, new Date())))
        throw new UrsError(
          'REBUILD_LOST',
          'the rebuild lock lapsed before the rebuild was done (Redis wiped again, or unreachable): rebuilt again',
          { canRetry: true },
        );
      log.info('published devices rebuilt from vms.risk-scores', {
        records,
        ...counts,
        ms: Date.now() - started,
      });
    } catch (error) {
      await deps.published.releaseRebuild(holder).catch(() => undefined);
      throw error;
    } finally {
      stopRenewing();
    }
  }

  async function untilRebuilt(signal?: AbortSignal): Promise<void> {
    for (;;) {
      if (await deps.published.isRebuilt()) return;
      if (await deps.published.takeRebuild(holder, lockMs)) {
        // This replica's callers share one rebuild.
        await (running ??= rebuild().finally(() => {
          running = undefined;
        }));
        continue;
      }
      if (signal?.aborted)
        throw new UrsError('STOPPING', 'given up waiting for the rebuild from vms.risk-scores', {
          canRetry: true,
        });
      await sleep(waitMs, signal);
    }
  }

  /**
   * A rebuild that failed for good (Kafka refused the read) is handed on as retryable: the batch or deletion
   * waiting on it is not at fault, and must wait for the next try rather than be dead-lettered.
   */
  async function ensure(signal?: AbortSignal): Promise<void> {
    try {
      await untilRebuilt(signal);
    } catch (error) {
      if (canRetry(error)) throw error;
      throw new UrsError(
        'REBUILD_FAILED',
        `the published devices could not be rebuilt from vms.risk-scores: ${errorMessage(error)}`,
        { canRetry: true, cause: error },
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
          // One that waiting does not mend (Kafka refused the read): tried again at the next check, and what
          // tombstones waits until it is done.
          if (signal.aborted) break;
          log.error('published devices not rebuilt from vms.risk-scores', {
            code: errorCode(error),
            reason: errorMessage(error),
          });
        }
        await sleep(intervalMs, signal);
      }
    },
  };
}
