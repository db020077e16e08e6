import { randomBytes } from 'node:crypto';
import type { Kafka, KafkaMessage } from 'kafkajs';
import { BusError, topicOffsets } from '@urs/bus';
import { validateMessage, type TenantRecord } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { canRetry, errorMessage, sleep, UrsError } from '@urs/resilience';
import type { RegistrarStateStore, TenantStore } from '@urs/store';
import { forEachLimit } from './concurrency';
import { GENERATION_HEADER, REVISION_HEADER } from './registry';

/**
 * The last word of `urs.tenants` on one tenant: its record, or a deletion (with its revision, and the
 * Director generation in force when it was made, if known).
 */
export type TenantLogEntry =
  | { tenantId: string; record: TenantRecord }
  | { tenantId: string; record: null; revision?: number; generation?: number };

/** A header's number, if it has one. */
function headerNumber(message: KafkaMessage, name: string): number | undefined {
  const header = message.headers?.[name];
  if (header === undefined) return undefined;
  const value = Number(header.toString());
  return Number.isFinite(value) ? value : undefined;
}

/**
 * Reads a compacted topic from the beginning up to the end it had when the read started, with a
 * consumer group of its own (KafkaJS has no manual assignment), which is deleted afterwards. Returns
 * the last entry per key. A consumer that Kafka stopped for good (a crash KafkaJS does not restart, e.g.
 * an authorisation error) fails the read at once with a non-retryable `BusError` `CONSUMER_STOPPED`
 * saying why: it would read nothing more, and waiting out `timeoutMs` would only hide the reason.
 */
export async function readTenantLog(
  kafka: Kafka,
  topic: string,
  groupPrefix: string,
  logger: Logger,
  timeoutMs = 120_000,
): Promise<TenantLogEntry[]> {
  const admin = kafka.admin();
  await admin.connect();
  const groupId = `${groupPrefix}.rebuild.${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  try {
    // Right after the topic was created its leaders may not answer yet (KRaft): retried while it settles.
    const offsets = await topicOffsets(kafka, topic, { logger });
    const pending = new Set(offsets.filter((o) => BigInt(o.high) > BigInt(o.low)).map((o) => o.partition));
    const entries = new Map<string, TenantLogEntry>();
    if (pending.size === 0) return [];
    const targets = new Map(offsets.map((o) => [o.partition, BigInt(o.high) - 1n]));
    const consumer = kafka.consumer({ groupId, allowAutoTopicCreation: false });
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    let stop!: (error: Error) => void;
    const stopped = new Promise<Error>((resolve) => (stop = resolve));
    consumer.on(consumer.events.CRASH, (event) => {
      if (event.payload.restart) return;
      stop(
        new BusError(
          'CONSUMER_STOPPED',
          `reading ${topic}: Kafka stopped its consumer: ${errorMessage(event.payload.error)}`,
          {
            cause: event.payload.error,
            details: { topic },
          },
        ),
      );
    });
    try {
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({
        autoCommit: false,
        eachBatch: async ({ batch }) => {
          for (const message of batch.messages) {
            const key = message.key?.toString('utf8');
            if (!key) continue;
            if (message.value === null) {
              const revision = headerNumber(message, REVISION_HEADER);
              const generation = headerNumber(message, GENERATION_HEADER);
              entries.set(key, {
                tenantId: key,
                record: null,
                ...(revision === undefined ? {} : { revision }),
                ...(generation === undefined ? {} : { generation }),
              });
              continue;
            }
            try {
              const record = validateMessage('urs/tenant-record', JSON.parse(message.value.toString('utf8')));
              const previous = entries.get(key);
              if (!previous || !previous.record || previous.record.revision < record.revision) {
                entries.set(key, { tenantId: key, record });
              }
            } catch (error) {
              logger.warn('unreadable tenant record skipped in rebuild', {
                key,
                offset: message.offset,
                reason: errorMessage(error),
              });
            }
          }
          const target = targets.get(batch.partition) ?? -1n;
          if (BigInt(batch.lastOffset()) >= target) {
            pending.delete(batch.partition);
            if (pending.size === 0) done();
          }
        },
      });
      const timer = new AbortController();
      const failure = await Promise.race([
        finished.then(() => undefined),
        stopped,
        sleep(timeoutMs, timer.signal).then(
          () => new Error(`reading ${topic} did not reach its end within ${timeoutMs} ms`),
        ),
      ]);
      timer.abort();
      if (failure) throw failure;
    } finally {
      await consumer.disconnect();
    }
    return [...entries.values()];
  } finally {
    await admin.deleteGroups([groupId]).catch(() => undefined);
    await admin.disconnect();
  }
}

export interface RebuilderDeps {
  /** Reads `urs.tenants` to its end (readTenantLog in production). */
  readLog: () => Promise<TenantLogEntry[]>;
  tenants: TenantStore;
  state: RegistrarStateStore;
  logger: Logger;
}

export interface TenantRebuilder {
  /**
   * Rebuilds Redis from `urs.tenants` unless it was done since Redis last came up empty. Single-flight.
   * A failure rejects with a retryable error: the push or request waiting on it is not at fault.
   */
  ensure(): Promise<void>;
  /**
   * Checks every `intervalMs` (a Redis wiped while running is refilled); stops on `signal`, or once a
   * rebuild failed for good (see `failed`).
   */
  watch(intervalMs: number, signal: AbortSignal): Promise<void>;
  /**
   * Resolves with the error of a rebuild that failed for good (a non-retryable error, e.g. its consumer
   * stopped by Kafka): this registrar can no longer refill a wiped Redis, so it should stop and be started
   * again. Never resolves otherwise.
   */
  failed(): Promise<Error>;
}

/**
 * Redis is fast state; `urs.tenants` is the record. A marker key says Redis was filled: when it is
 * missing (a new Redis, a flush, an eviction), every tenant is written back from the topic (newest
 * revision wins, so records written meanwhile are kept), the revision counters, the deletions'
 * generations and Director's generation are raised to what the topic has seen, and the marker is set.
 */
export function createTenantRebuilder(deps: RebuilderDeps): TenantRebuilder {
  const log = deps.logger.child({ component: 'rebuild' });
  let running: Promise<void> | undefined;
  let failedForGood: Error | undefined;
  let fail: (error: Error) => void = () => undefined;
  const failure = new Promise<Error>((resolve) => (fail = resolve));

  async function rebuild(): Promise<void> {
    if (await deps.state.isRebuilt()) return;
    const started = Date.now();
    const wasEmpty = await deps.tenants.isEmpty();
    const entries = await deps.readLog();
    let restored = 0;
    // Tenants are independent: restored 32 at a time (a rebuild of tens of thousands takes seconds).
    await forEachLimit(entries, 32, async (entry) => {
      if (entry.record === null) {
        if (entry.generation !== undefined)
          await deps.state.observeDeletion(entry.tenantId, entry.generation);
        if (entry.revision !== undefined) {
          await deps.state.observeRevision(entry.tenantId, entry.revision);
          await deps.tenants.remove(entry.tenantId, entry.revision);
        }
        return;
      }
      const record = entry.record;
      await deps.state.observeRevision(record.tenantId, record.revision);
      if (record.generation !== undefined) await deps.state.observeGeneration(record.generation);
      if (await deps.tenants.put(record)) {
        restored++;
        await deps.tenants.updateStatus(record.tenantId, { state: record.enabled ? 'active' : 'disabled' });
      }
    });
    await deps.state.markRebuilt(new Date());
    log.info('tenants rebuilt from urs.tenants', {
      restored,
      entries: entries.length,
      wasEmpty,
      ms: Date.now() - started,
    });
  }

  /**
   * What the callers of `ensure` get from a failed rebuild. One that failed for good is reported through
   * `failed` and handed on as retryable: a Director push must wait for the next registrar, not be
   * dead-lettered, and a REST call gets a 503.
   */
  function reported(error: unknown): unknown {
    if (canRetry(error)) return error;
    const reason = errorMessage(error);
    if (!failedForGood) {
      failedForGood = error instanceof Error ? error : new Error(reason);
      fail(failedForGood);
    }
    return new UrsError('REBUILD_FAILED', `Redis could not be rebuilt from urs.tenants: ${reason}`, {
      canRetry: true,
      cause: error,
    });
  }

  function ensure(): Promise<void> {
    running ??= rebuild()
      .catch((error: unknown) => {
        throw reported(error);
      })
      .finally(() => {
        running = undefined;
      });
    return running;
  }

  return {
    ensure,
    async watch(intervalMs, signal) {
      while (!signal.aborted && !failedForGood) {
        try {
          await ensure();
        } catch (error) {
          if (failedForGood) break;
          log.error('rebuild failed; retrying', { reason: errorMessage(error) });
        }
        await sleep(intervalMs, signal);
      }
    },
    failed: () => failure,
  };
}
