import type { Consumer, ConsumerRunConfig, Kafka } from 'kafkajs';
import { compileContracts } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { DEFAULT_RETRY_POLICY, UrsError, errorMessage, type RetryPolicy } from '@urs/resilience';
import type { Registry } from '@urs/telemetry';
import type { DeadLetterLedger } from './dead-letter-once';
import { createMessageProcessor, type TopicSubscription } from './handle';
import { createHeldMessages } from './held';
import { DEFAULT_RUNNER_RESTART, createConsumerKeeper } from './keeper';
import { createKeyOrderedConsumption, type KeyOrderedConsumption } from './key-ordered';
import { createPartitionOrderedConsumption } from './partition-ordered';
import { BusError, type Publisher } from './publisher';

export { PoisonMessageError } from './handle';
export { DEFAULT_RUNNER_RESTART } from './keeper';
export type { InboundMessage, MessageHandler, TopicSubscription } from './handle';

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
   * flap readiness. Ready again as soon as no message is held. Default 30000.
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
   * buffer is left, the partition pauses again when full. Default 100.
   */
  maxBufferedPerPartition?: number;
  /**
   * Ordering 'key': how long a partition whose buffer is full stays paused, without becoming half empty,
   * before it is read past its full buffer (see maxBufferedPerPartition), ms. A key streaming through a busy
   * partition fills the buffer too, and reading past it would fetch most of its messages twice, so this is
   * longer than half a buffer takes to finish while its messages progress: the 10 batches of 500 devices of
   * half the scorer's or the publisher's buffer (20) take 0.3–0.6 s at the pipeline's pace (30–55 ms apart),
   * 0.9 s at ~91 ms each, ~1.5 s on the machine's slow days (test/bench/FINDINGS.md), and 25 bulk batches
   * enriched from an export in memory less. And it is short against what a waiting key kept the keys behind
   * it waiting before (an export, seconds to minutes; a quota, minutes). Messages that each take seconds
   * (per-device enrichment) are read past after it anyway: the keys behind them would wait as long.
   * Default 2000.
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

export type RunnerState = 'created' | 'starting' | 'running' | 'closing' | 'closed';

export interface ConsumerRunner {
  readonly state: RunnerState;
  /** Whether start() was ever called: a runner closed before it never joined its group. */
  readonly startedOnce: boolean;
  start(): Promise<void>;
  /**
   * Joined the group and consuming. False while its broker has answered nothing for 10 s (away, say), from a
   * crash until the restarted consumer joined its group again, and while messages have been held on an
   * infrastructure fault for longer than heldNotReadyAfterMs.
   */
  isReady(): boolean;
  /**
   * Resolves with a non-retryable BusError CONSUMER_STOPPED (its cause the consumer's error) when the
   * consumer crashed with an error that waiting does not mend (an authorisation refused, a configuration the
   * broker refuses, see crashHeals): the runner then consumes nothing, for good. A crash that may heal (a
   * broker away or restarting, for however long) is restarted instead, see `restart`. Never resolves
   * otherwise.
   */
  failed(): Promise<Error>;
  /**
   * Stops intake, lets the in-flight messages finish or aborts them (see drainTimeoutMs), commits what
   * was handled, disconnects. Idempotent. The runner is stopping as soon as
   * close is called (before it first waits): a handler failing from then on leaves its message
   * uncommitted for the next owner, neither retried nor dead-lettered.
   */
  close(): Promise<void>;
}

const DEFAULT_MAX_BYTES_PER_PARTITION = 4 * 1024 * 1024;
const FETCH_MAX_BYTES = 16 * 1024 * 1024;

export const DEFAULT_RUNNER_RETRY: RetryPolicy = { ...DEFAULT_RETRY_POLICY, maxAttempts: 20 };

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const chosen = value ?? fallback;
  if (!Number.isInteger(chosen) || chosen < 1) {
    throw new UrsError('RUNNER_OPTION_INVALID', `${name} must be an integer >= 1, got ${String(value)}`, {
      canRetry: false,
    });
  }
  return chosen;
}

/**
 * Runs handlers over Kafka at least once: a message's offset is committed only after its handler's
 * effects are done, or after it was dead-lettered. Poison input (not JSON, not matching its contract,
 * or a handler's non-retryable error) goes to the dead-letter topic with its reason and the worker
 * goes on; retryable failures are retried in place with backoff, those of Redis or Kafka for as long as
 * they last (see ConsumerRunnerOptions.retry).
 */
export function createConsumerRunner(options: ConsumerRunnerOptions): ConsumerRunner {
  const log = options.logger.child({ component: 'consumer', groupId: options.groupId });
  const retry = options.retry ?? DEFAULT_RUNNER_RETRY;
  const ordering = options.ordering ?? 'partition';
  if (ordering !== 'partition' && ordering !== 'key') {
    throw new UrsError(
      'RUNNER_OPTION_INVALID',
      `ordering must be 'partition' or 'key', got ${String(ordering)}`,
      {
        canRetry: false,
      },
    );
  }
  const commit = options.commitOffsets ?? true;
  if (!commit && ordering === 'key') {
    throw new UrsError('RUNNER_OPTION_INVALID', "commitOffsets false needs ordering 'partition'", {
      canRetry: false,
    });
  }
  if (!commit && options.deadLetters === undefined) {
    throw new UrsError('RUNNER_OPTION_INVALID', 'commitOffsets false needs deadLetters', { canRetry: false });
  }
  // Validators compiled before the first message, not by it (and with it, the dead-letter contract).
  compileContracts([
    ...options.subscriptions.map((subscription) => subscription.contract),
    'urs/dead-letter',
  ]);
  const held = createHeldMessages({
    log,
    gauge: options.metrics.gauge(
      'urs_consumer_held_messages',
      'Messages held, retried and not dead-lettered, because a dependency (Redis, Kafka) failed them, by consumer group.',
    ),
    labels: { group: options.groupId },
    notReadyAfterMs: positiveInt('heldNotReadyAfterMs', options.heldNotReadyAfterMs, 30_000),
    logIntervalMs: positiveInt('heldLogIntervalMs', options.heldLogIntervalMs, 60_000),
  });
  const settle = createMessageProcessor({
    service: options.service,
    subscriptions: new Map(options.subscriptions.map((subscription) => [subscription.topic, subscription])),
    publisher: options.publisher,
    dlqTopic: options.dlqTopic,
    deadLetters: options.deadLetters,
    log,
    retry,
    held,
    handled: options.metrics.counter('urs_messages_total', 'Messages consumed, by topic and outcome.'),
    seconds: options.metrics.histogram('urs_handler_seconds', 'Time spent handling one message, in seconds.'),
  });
  const drainTimeoutMs = positiveInt('drainTimeoutMs', options.drainTimeoutMs, 5_000);
  let state: RunnerState = 'created';
  let startedOnce = false;
  let closing: Promise<void> | undefined;

  const consumer: Consumer = options.kafka.consumer({
    groupId: options.groupId,
    // KafkaJS restarts a crashed consumer by itself only when the error's root cause is `retriable`, after the
    // last retry's delay (up to its maxRetryTime), and leaves it stopped for good otherwise, outages included
    // (see crash.ts). The runner restarts it instead, on its own judgement and pace (keeper.ts); the
    // retries are KafkaJS's default for a consumer.
    retry: { retries: 5, restartOnFailure: async () => false },
    sessionTimeout: options.sessionTimeoutMs ?? 30_000,
    // A fetch answers as soon as a message arrives on a partition it asks for, so this bounds how long an idle
    // fetch blocks disconnect() on shutdown (KafkaJS default: 5 s), and how long a partition resumed after a
    // pause (ordering 'key', its buffer full) waits for the fetch under way without it to come back: with
    // 1 s, a scorer with a backlog stood idle 350–550 ms at a time; 500 ms is the Java consumer's default.
    maxWaitTimeInMs: 500,
    maxBytesPerPartition: positiveInt(
      'maxBytesPerPartition',
      options.maxBytesPerPartition,
      DEFAULT_MAX_BYTES_PER_PARTITION,
    ),
    // Bounds a fetch over all partitions (KafkaJS default 10 MiB), so memory stays bounded when many
    // partitions have a backlog.
    maxBytes: FETCH_MAX_BYTES,
    allowAutoTopicCreation: false,
  });
  const keyed: KeyOrderedConsumption | undefined =
    ordering === 'key'
      ? createKeyOrderedConsumption({
          consumer,
          topics: options.subscriptions.map((subscription) => subscription.topic),
          settle,
          log,
          retry,
          maxBufferedPerPartition: positiveInt(
            'maxBufferedPerPartition',
            options.maxBufferedPerPartition,
            100,
          ),
          maxDeferredPerPartition: positiveInt(
            'maxDeferredPerPartition',
            options.maxDeferredPerPartition,
            10_000,
          ),
          readPastAfterMs: positiveInt('readPastAfterMs', options.readPastAfterMs, 2_000),
          commitIntervalMs: positiveInt('commitIntervalMs', options.commitIntervalMs, 1_000),
          drainTimeoutMs,
          buffered: options.metrics.gauge(
            'urs_consumer_buffered_messages',
            "Messages held in memory and not yet finished, by consumer group (ordering 'key').",
          ),
          deferred: options.metrics.gauge(
            'urs_consumer_deferred_messages',
            "Messages read past a full buffer, to be read again, by consumer group (ordering 'key').",
          ),
          labels: { group: options.groupId },
        })
      : undefined;
  const partitioned = keyed
    ? undefined
    : createPartitionOrderedConsumption({
        settle,
        commit,
        drainTimeoutMs,
        log,
      });
  const keeper = createConsumerKeeper({
    groupId: options.groupId,
    log,
    restart: options.restart ?? DEFAULT_RUNNER_RESTART,
    run: () => consumer.run(runConfig),
    busy: () => partitioned?.busy() ?? false,
  });
  consumer.on(consumer.events.GROUP_JOIN, (event) => {
    keeper.joined();
    keyed?.onGroupJoin(event.payload);
  });
  // KafkaJS emits CRASH once every batch of the stopped run has returned (and its offsets were committed), so a
  // restart never overlaps the old run's work: a message held then delays the crash, and is not handled twice.
  consumer.on(consumer.events.CRASH, (event) => keeper.crashed(event.payload.error));
  consumer.on(consumer.events.REQUEST, () => keeper.answered());

  const runConfig: ConsumerRunConfig = {
    // Ordering 'key' resolves offsets on accepting a message, ahead of its handling, and commits
    // the finished watermark itself: KafkaJS must not commit resolved offsets.
    // Without commits (commitOffsets false), none: not even the resolved offsets on disconnect.
    autoCommit: keyed === undefined && commit,
    autoCommitInterval: 1_000,
    eachBatchAutoResolve: false,
    partitionsConsumedConcurrently: options.partitionsConsumedConcurrently ?? 1,
    // Exactly one of the two is there, by ordering.
    eachBatch: (payload) => keyed?.eachBatch(payload) ?? partitioned?.eachBatch(payload) ?? Promise.resolve(),
  };

  /**
   * Close found the consumer still joining its group (a start or restart, the broker slow to answer) after
   * its drain: disconnecting now would drop that consumer unstopped, to join after close, so it is
   * disconnected once its run settles, should the process live that long; close fails, as it did not leave
   * the group (the service exits 1).
   */
  function disconnectOnceJoined(): never {
    void keeper
      .joining()
      .then(() => consumer.disconnect())
      .catch((error: unknown) => {
        log.warn('consumer joined during close failed to disconnect', { reason: errorMessage(error) });
      });
    throw new BusError(
      'CONSUMER_STILL_JOINING',
      `the consumer of group ${options.groupId} was still joining its group at close; it leaves it once joined`,
      { details: { groupId: options.groupId, waitedMs: drainTimeoutMs } },
    );
  }

  return {
    get state() {
      return state;
    },
    get startedOnce() {
      return startedOnce;
    },
    async start() {
      if (state !== 'created') throw new UrsError('RUNNER_STATE', `cannot start a runner that is ${state}`);
      state = 'starting';
      startedOnce = true;
      await consumer.connect();
      for (const subscription of options.subscriptions) {
        await consumer.subscribe({
          topic: subscription.topic,
          fromBeginning: subscription.fromBeginning ?? true,
        });
      }
      const run = consumer.run(runConfig);
      // A close while it joins waits for it (see ConsumerKeeper.stop).
      keeper.track(run);
      await run;
      if (state !== 'starting') return;
      state = 'running';
      log.info('consuming', {
        topics: options.subscriptions.map((subscription) => subscription.topic),
        ordering,
      });
    },
    isReady() {
      return state === 'running' && keeper.isUp() && !held.isStalled();
    },
    failed() {
      return keeper.failed();
    },
    close() {
      closing ??= (async () => {
        const wasStarted = state !== 'created';
        state = 'closing';
        // A start or restart in flight joins the group after close unless waited for (see ConsumerKeeper.stop).
        const stopping = keeper.stop(drainTimeoutMs);
        // Ordering 'partition': alongside disconnect, which waits for the batch in flight; the drain ends that
        // batch without its message once the drain time has passed twice (see drainTimeoutMs).
        const draining = partitioned?.drain();
        // Ordering 'key' commits before disconnecting: a commit needs the member in its group.
        if (keyed && wasStarted) await keyed.drain();
        const joinedBeforeDisconnect = await stopping;
        // disconnect() stops fetching, waits for the running eachBatch, commits resolved offsets
        // (ordering 'partition'), leaves the group.
        if (joinedBeforeDisconnect) await consumer.disconnect();
        await draining;
        state = 'closed';
        if (joinedBeforeDisconnect) return;
        // The drains may have given the join the time it needed.
        if (await keeper.stop(0)) await consumer.disconnect();
        else disconnectOnceJoined();
      })();
      return closing;
    },
  };
}
