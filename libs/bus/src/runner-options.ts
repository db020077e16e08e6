import type { Kafka } from 'kafkajs';
import type { Logger } from '@urs/logging';
import { DEFAULT_RETRY_POLICY, UrsError, type RetryPolicy } from '@urs/resilience';
import type { Registry } from '@urs/telemetry';
import type { DeadLetterLedger } from './dead-letter-once';
import type { TopicSubscription } from './handle';
import type { Publisher } from './publisher';

/** What the runner keeps in order; see ConsumerRunnerOptions.ordering. */
export type Ordering = 'partition' | 'key';

export interface ConsumerRunnerOptions {
  kafka: Kafka;
  /** Written on dead letters and logs. */
  service: string;
  groupId: string;
  // Each subscription is typed by its own contract; the union is erased here.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  subscriptions: TopicSubscription<any>[];
  publisher: Publisher;
  dlqTopic: string;
  logger: Logger;
  metrics: Registry;
  /**
   * Retries of a handler's retryable failure, in place (the partition, or with ordering 'key' the
   * key, waits, so order holds). Past maxAttempts the message is dead-lettered with code
   * RETRIES_EXHAUSTED. Default: 20 attempts, 200 ms to 10 s apart.
   *
   * Only the message's own failures count: one of a dependency every message needs (Redis refusing writes
   * or unreachable, Kafka refusing a produce; `isInfrastructureFault`) says nothing of the message, and
   * dead-lettering it would lose work because the infrastructure was down. Such a message is held instead:
   * retried with the same backoff, up to maxDelayMs apart, for as long as the dependency stays down, never
   * dead-lettered for it and never committed past; the keys (ordering 'key') whose handling does not fail
   * keep going. A stop gives it up unfinished, as any retry. See heldNotReadyAfterMs and
   * `urs_consumer_held_messages`.
   */
  retry?: RetryPolicy;
  /**
   * How long messages may be held on an infrastructure fault (see `retry`) without a pause before the
   * runner stops saying it is ready (and with it the service's /readyz), ms: the service is up but does not
   * get its work done, which an operator should see; a blip of a few seconds (a Redis failover) should not
   * flap readiness. Ready again as soon as no message is held. Messages held as `catching-up` (a
   * subscription's `catchingUp`: the service still reading at its start what they need) do not count. Default
   * 30000.
   */
  heldNotReadyAfterMs?: number;
  /**
   * At most one warning this often that messages are held on an infrastructure fault, ms: an outage fails
   * every message alike, and a line per attempt of each would flood the log for as long as it lasts. The
   * first failure of an outage is warned of (unless a warning was logged within this time), and its end is
   * told once. Default 60000.
   */
  heldLogIntervalMs?: number;
  /** Partitions handled at once. Default 1. Order within a partition is always kept. */
  partitionsConsumedConcurrently?: number;
  /** KafkaJS session timeout, ms. Default 30000. */
  sessionTimeoutMs?: number;
  /**
   * Most bytes one fetch brings of one partition. Default 4 MiB: a batch message of 500 machine
   * records is ~0.6–0.9 MB, so KafkaJS's 1 MiB brought one message per fetch (and dropped the part of
   * the next one it had read), making every message wait for a fetch round trip of its own.
   */
  maxBytesPerPartition?: number;
  /**
   * What is kept in order. Default 'partition': one message of a partition at a time, in offset
   * order; a slow message holds up its whole partition. 'key': messages with the same key start in
   * offset order, two at a time (the next starts while the one before drains), messages with different
   * keys of one partition at once, so a slow key (a tenant waiting on its quota) does not hold up the
   * other keys of its partition. The committed offset of a partition
   * never passes a message that is not finished: a crash redelivers it and whatever came after it,
   * so handlers must be idempotent (they must be anyway: delivery is at least once).
   */
  ordering?: Ordering;
  /**
   * Ordering 'key': messages of a partition held in memory and not finished (queued behind their key or
   * in flight). Bounds the memory and the handlers running at once: this many per partition. When
   * reached, the partition's fetching pauses until half of them are finished. A partition still full
   * readPastAfterMs later is read on, so one key's waiting messages do not hold up the keys behind them
   * for longer: a message that finds no room is deferred (its offset kept, the message let go of, and
   * read again once there is room), and a key holding at least two fewer than the key holding the most
   * takes the place of that key's newest waiting message, which is deferred instead; once half of the
   * buffer is left, the partition pauses again when full. A key that held the buffer when it was last full
   * (all of it but two messages of other keys) holds up the keys behind it even while its own messages
   * finish: streaming a backlog (a bulk tenant's hundreds of batches), it refills the buffer as fast as it
   * halves. So the wait goes on while the buffer is half empty and refilled by it, and reading past, once
   * begun, goes on until the partition was read to its end: the keys behind the backlog are reached
   * readPastAfterMs after it filled the buffer, not after the whole backlog. Default 100.
   */
  maxBufferedPerPartition?: number;
  /**
   * Ordering 'key': how long a partition whose buffer is full stays paused, without becoming half empty,
   * before it is read past its full buffer (see maxBufferedPerPartition), ms; also how long one key may hold
   * the buffer, half empty and refilled by its own messages, before the partition is read past it. A key
   * streaming through a busy partition fills the buffer too, and reading past it fetches its messages past
   * the buffer twice (read past, then read again), so this is longer than half a buffer takes to finish
   * while its messages progress: the 10 batches of 500 devices of half the scorer's or the publisher's
   * buffer (20) take 0.3–0.6 s at the pipeline's pace (30–55 ms apart), 0.9 s at ~91 ms each, ~1.5 s on the
   * machine's slow days (test/bench/FINDINGS.md), and 25 bulk batches enriched from an export in memory
   * less: a key whose stream ends within it is read once. And it is short against what a waiting key kept the
   * keys behind it waiting before (an export, seconds to minutes; a quota, minutes), and against a bulk
   * tenant's backlog streaming through the scorer (200 batches of a 100,000-device tenant, ~12 s): a longer
   * stream is read past after it, its batches from then on fetched twice, and the tenants behind it wait
   * this long instead of the whole backlog. Messages that each take seconds (per-device enrichment) are read
   * past after it anyway: the keys behind them would wait as long. Default 2000.
   */
  readPastAfterMs?: number;
  /**
   * Ordering 'key': offsets of a partition's deferred messages kept (~45 bytes each). When reached,
   * the partition's fetching pauses until half of maxBufferedPerPartition is left; a key with more
   * messages waiting in one partition than this (and the buffer) then holds up the keys behind them.
   * Default 10000.
   */
  maxDeferredPerPartition?: number;
  /**
   * Whether handled offsets are committed. Default true. False suits a consumer that reads its topics from
   * the beginning every time it starts, in a group of its own (every replica reading every tenant): the group
   * then holds no offsets, so once its member is gone (closed, or killed and past its session) the broker's
   * periodic cleanup drops it, instead of keeping an orphan group for the offsets' retention (7 days by
   * default) after every restart. Ordering 'partition' only.
   */
  commitOffsets?: boolean;
  /**
   * Which dead letters the cluster wrote (`createDeadLetterLedger`, `@urs/store`): a message whose letter for
   * the same failure any process wrote is skipped (outcome `dead-lettered-before`), not dead-lettered again;
   * one whose letter another process is writing is held until it is written or that claim lapses.
   * Required with commitOffsets false: each start of each replica, reading from the beginning, wrote it again.
   */
  deadLetters?: DeadLetterLedger;
  /**
   * How soon a consumer that Kafka stopped is started again, while what stopped it may heal by waiting (the
   * broker away or restarting, see crashHeals): backoff with full jitter, at most maxDelayMs apart, for as
   * long as it takes. Short, so that a consumer is back within a few seconds of its broker. Default 250 ms
   * to 5 s apart.
   */
  restart?: RetryPolicy;
  /** Ordering 'key': how soon a finished message's offset is committed, ms. Default 1000. */
  commitIntervalMs?: number;
  /**
   * On close, how long messages in flight may take to finish, ms; then their handler's `signal` is aborted
   * and close waits as long again for them to return, then goes on without them (their messages left
   * uncommitted). Messages not started are left to the next owner. Default 5000; a service gives its runners
   * ServiceContext.drainTimeoutMs, a third of URS_SHUTDOWN_TIMEOUT_MS, so its stop fits in that time.
   */
  drainTimeoutMs?: number;
}

export const DEFAULT_RUNNER_RETRY: RetryPolicy = { ...DEFAULT_RETRY_POLICY, maxAttempts: 20 };

export function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const chosen = value ?? fallback;
  if (!Number.isInteger(chosen) || chosen < 1) {
    throw new UrsError('RUNNER_OPTION_INVALID', `${name} must be an integer >= 1, got ${String(value)}`, {
      canRetry: false,
    });
  }
  return chosen;
}
