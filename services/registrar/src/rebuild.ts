import type { Kafka, KafkaMessage } from 'kafkajs';
import { lastOffsets, readTopicUpTo, topicOffsets } from '@urs/bus';
import {
  TENANT_GENERATION_HEADER,
  TENANT_REVISION_HEADER,
  numericHeader,
  validateMessage,
  type TenantRecord,
} from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { canRetry, errorMessage, retryThroughOutage, sleep, UrsError } from '@urs/resilience';
import type { RegistrarStateStore, TenantStore } from '@urs/store';
import { forEachLimit } from './concurrency';

/**
 * The last word of `urs.tenants` on one tenant: its record, or a deletion (with its revision, and the
 * Director generation in force when it was made, if known).
 */
export type TenantLogEntry =
  | { tenantId: string; record: TenantRecord }
  | { tenantId: string; record: null; revision?: number; generation?: number };

/** `readTopicUpTo`, handing on one message at a time; `read.signal` cuts it. */
function readEach(
  kafka: Kafka,
  topic: string,
  targets: Map<number, bigint>,
  read: { groupPrefix: string; timeoutMs: number; signal?: AbortSignal | undefined },
  onMessage: (message: KafkaMessage) => void,
): Promise<void> {
  const each = (messages: KafkaMessage[]): void => {
    for (const message of messages) onMessage(message);
  };
  return readTopicUpTo(kafka, topic, targets, read.groupPrefix, read.timeoutMs, each, read.signal);
}

/**
 * Reads a compacted topic from the beginning up to the end it had when the read started (see
 * `readTopicUpTo`). Returns the last entry per key. `signal` (the registrar's stop) cuts the read, rejecting
 * with its reason.
 */
export async function readTenantLog(
  kafka: Kafka,
  topic: string,
  groupPrefix: string,
  logger: Logger,
  timeoutMs = 120_000,
  signal?: AbortSignal,
): Promise<TenantLogEntry[]> {
  // Right after the topic was created its leaders may not answer yet (KRaft): retried while it settles.
  const targets = lastOffsets(await topicOffsets(kafka, topic, { logger, ...(signal ? { signal } : {}) }));
  const entries = new Map<string, TenantLogEntry>();
  await readEach(kafka, topic, targets, { groupPrefix, timeoutMs, signal }, (message) => {
    const key = message.key?.toString('utf8');
    if (!key) return;
    if (message.value === null) {
      const revision = numericHeader(message.headers, TENANT_REVISION_HEADER);
      const generation = numericHeader(message.headers, TENANT_GENERATION_HEADER);
      entries.set(key, {
        tenantId: key,
        record: null,
        ...(revision === undefined ? {} : { revision }),
        ...(generation === undefined ? {} : { generation }),
      });
      return;
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
  });
  return [...entries.values()];
}

/**
 * The highest Director generation among the pushes on `urs.registration` before the registrar group's
 * committed offset (`groupId`), or -1. Every push before it was handled: applied, ignored as older than
 * one applied before it, or dead-lettered as unreadable (skipped here). So it is the last generation
 * applied, which Redis alone would lose when wiped: a push that changed nothing writes no tenant record
 * to carry its generation. Pushes past the committed offset are left out: they come again, and each is
 * compared with what was applied before it. Pushes the topic's retention already removed are not seen.
 */
export async function readHandledGeneration(
  kafka: Kafka,
  topic: string,
  groupId: string,
  logger: Logger,
  timeoutMs = 120_000,
): Promise<number> {
  const offsets = await topicOffsets(kafka, topic, { logger });
  const admin = kafka.admin();
  await admin.connect();
  let committed: Map<number, bigint>;
  try {
    const [fetched] = await admin.fetchOffsets({ groupId, topics: [topic] });
    committed = new Map((fetched?.partitions ?? []).map((p) => [p.partition, BigInt(p.offset)]));
  } finally {
    await admin.disconnect();
  }
  // The last handled offset of each partition whose handled pushes the topic still holds (-1: none committed).
  const targets = new Map(
    offsets
      .map((o) => ({ partition: o.partition, low: BigInt(o.low), next: committed.get(o.partition) ?? -1n }))
      .filter(({ low, next }) => next > low)
      .map(({ partition, next }) => [partition, next - 1n] as const),
  );
  let generation = -1;
  await readEach(kafka, topic, targets, { groupPrefix: groupId, timeoutMs }, (message) => {
    if (message.value === null) return;
    try {
      const push = validateMessage('urs/registration-push', JSON.parse(message.value.toString('utf8')));
      generation = Math.max(generation, push.generation);
    } catch {
      // Dead-lettered when it was handled: it applied nothing.
    }
  });
  return generation;
}

export interface RebuilderDeps {
  /** Reads `urs.tenants` to its end (readTenantLog in production). */
  readLog: () => Promise<TenantLogEntry[]>;
  /**
   * The last Director generation applied as Kafka has it, or -1 (readHandledGeneration in production):
   * the records of `urs.tenants` carry only the generations that changed a tenant.
   */
  readGeneration: () => Promise<number>;
  tenants: TenantStore;
  state: RegistrarStateStore;
  logger: Logger;
  /**
   * Brings Redis up to the entries of `urs.tenants` it is behind on (`TenantRegistry.catchUp`): what a
   * registrar sent to Kafka and was killed before it stored in Redis (see `TenantRebuilder.catchUp`).
   */
  catchUp?: (entries: TenantLogEntry[]) => Promise<unknown>;
}

export interface TenantRebuilder {
  /**
   * Rebuilds Redis from `urs.tenants` unless it was done since Redis last came up empty. Single-flight.
   * A failure rejects with a retryable error: the push or request waiting on it is not at fault.
   */
  ensure(): Promise<void>;
  /**
   * Once per process, unless a rebuild of this process read the topic already: reads `urs.tenants` and
   * catches Redis up on the tenants it is behind on (`deps.catchUp`), what a registrar killed between its
   * send and its write to Redis left behind. Single-flight; at once after it succeeded. Not part of `ensure`:
   * readiness and the REST reads do not wait for Kafka when Redis was rebuilt before. A failure rejects as
   * `ensure`'s does (one that failed for good is reported through `failed`).
   */
  catchUp(): Promise<void>;
  /**
   * Runs `check` (default `ensure`; the registrar's `ready`, which checks URS_SECRET_KEY after the first
   * rebuild) at once, then every `intervalMs` (a Redis wiped while running is refilled). A check that fails
   * retryably (Kafka or Redis away) is tried again with capped backoff, one warning per outage
   * (retryThroughOutage), so the first rebuild at start survives an outage as later ones do. Stops on
   * `signal`, at once also while a check is under way, or once one failed for good (see `failed`).
   */
  watch(intervalMs: number, signal: AbortSignal, check?: () => Promise<void>): Promise<void>;
  /**
   * Resolves with the error of a rebuild that failed for good (a non-retryable error, e.g. its consumer
   * stopped by Kafka), or of a watched check that did (a URS_SECRET_KEY refused): this registrar can no
   * longer refill a wiped Redis, so it should stop and be started again. Never resolves otherwise.
   */
  failed(): Promise<Error>;
}

/**
 * Redis is fast state; `urs.tenants` is the record. A marker key says Redis was filled: when it is
 * missing (a new Redis, a flush, an eviction), every tenant is written back from the topic (newest
 * revision wins, so records written meanwhile are kept), the revision counters, the deletions'
 * generations and Director's generation are raised to what Kafka has seen (`urs.tenants` and the
 * handled pushes of `urs.registration`), and the marker is set. A process that finds the marker there reads
 * the topic all the same, once (`catchUp`), and writes back only what Redis is behind on.
 */
export function createTenantRebuilder(deps: RebuilderDeps): TenantRebuilder {
  const log = deps.logger.child({ component: 'rebuild' });
  let running: Promise<void> | undefined;
  let failedForGood: Error | undefined;
  let fail: (error: Error) => void = () => undefined;
  const failure = new Promise<Error>((resolve) => (fail = resolve));

  /** Whether this process read `urs.tenants` once: rebuilt from it, or caught up with it. */
  let caughtUp = false;
  let catchingUp: Promise<void> | undefined;

  async function readAndCatchUp(catchUpWith: NonNullable<RebuilderDeps['catchUp']>): Promise<void> {
    const started = Date.now();
    const entries = await deps.readLog();
    if (caughtUp) return;
    await catchUpWith(entries);
    caughtUp = true;
    log.info('tenants caught up with urs.tenants', { entries: entries.length, ms: Date.now() - started });
  }

  function catchUp(): Promise<void> {
    if (caughtUp || !deps.catchUp) return Promise.resolve();
    catchingUp ??= readAndCatchUp(deps.catchUp)
      .catch((error: unknown) => {
        throw reported(error);
      })
      .finally(() => {
        catchingUp = undefined;
      });
    return catchingUp;
  }

  async function rebuild(): Promise<void> {
    if (await deps.state.isRebuilt()) return;
    const started = Date.now();
    const wasEmpty = await deps.tenants.isEmpty();
    const [entries, generation] = await Promise.all([deps.readLog(), deps.readGeneration()]);
    if (generation >= 0) await deps.state.observeGeneration(generation);
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
    // Every record newer than Redis's written back: nothing left to catch up.
    caughtUp = true;
    log.info('tenants rebuilt from urs.tenants', {
      restored,
      entries: entries.length,
      generation: await deps.state.lastGeneration(),
      wasEmpty,
      ms: Date.now() - started,
    });
  }

  /**
   * What the callers of `ensure` get from a failed rebuild. One that failed for good is reported through
   * `failed` and handed on as retryable: a Director push must wait for the next registrar, not be
   * dead-lettered, and a REST call gets a 503.
   */
  function failForGood(error: unknown): void {
    if (failedForGood) return;
    failedForGood = error instanceof Error ? error : new Error(errorMessage(error));
    fail(failedForGood);
  }

  function reported(error: unknown): unknown {
    if (canRetry(error)) return error;
    const reason = errorMessage(error);
    failForGood(error);
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
    catchUp,
    async watch(intervalMs, signal, check = ensure) {
      while (!signal.aborted && !failedForGood) {
        try {
          await retryThroughOutage(check, {
            what: 'rebuilding the tenants from urs.tenants',
            log,
            signal,
            // One that failed for good is handed to its callers as retryable (see `reported`): not retried here.
            shouldRetry: (error) => !failedForGood && canRetry(error),
          });
        } catch (error) {
          // A check that failed for good otherwise (a URS_SECRET_KEY refused) stops the registrar too.
          if (!signal.aborted) failForGood(error);
          break;
        }
        await sleep(intervalMs, signal);
      }
    },
    failed: () => failure,
  };
}
