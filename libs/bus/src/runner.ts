import type { Consumer, ConsumerRunConfig, EachBatchPayload, Kafka, KafkaMessage } from 'kafkajs';
import { compileContracts } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import {
  DEFAULT_RETRY_POLICY,
  UrsError,
  errorMessage,
  retryDelayMs,
  retryPolicy,
  type RetryPolicy,
} from '@urs/resilience';
import type { Registry } from '@urs/telemetry';
import { crashHeals } from './crash';
import { createMessageProcessor, type TopicSubscription } from './handle';
import { createHeldMessages } from './held';
import { createKeyOrderedConsumption, type KeyOrderedConsumption } from './key-ordered';
import { BusError, type Publisher } from './publisher';

export { PoisonMessageError } from './handle';
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
   * How soon a consumer that Kafka stopped is started again, while what stopped it may heal by waiting (the
   * broker away or restarting, see crashHeals): backoff with full jitter, at most maxDelayMs apart, for as
   * long as it takes. Short, so that a consumer is back within a few seconds of its broker. Default 250 ms
   * to 5 s apart.
   */
  restart?: RetryPolicy;
  /** Ordering 'key': how soon a finished message's offset is committed, ms. Default 1000. */
  commitIntervalMs?: number;
  /**
   * Ordering 'key': on close, how long messages in flight may take to finish, ms; then their
   * handler's `signal` is aborted and close waits as long again for them to return. Queued messages
   * not started are left to the next owner. Default 5000; a service gives its runners
   * ServiceContext.drainTimeoutMs, a third of URS_SHUTDOWN_TIMEOUT_MS, so its stop fits in that time.
   */
  drainTimeoutMs?: number;
}

export type RunnerState = 'created' | 'starting' | 'running' | 'closing' | 'closed';

export interface ConsumerRunner {
  readonly state: RunnerState;
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
   * Stops intake, lets the in-flight message finish (ordering 'key': finish or abort, see
   * drainTimeoutMs), commits what was handled, disconnects. Idempotent. The runner is stopping as soon as
   * close is called (before it first waits): a handler failing from then on leaves its message
   * uncommitted for the next owner, neither retried nor dead-lettered.
   */
  close(): Promise<void>;
}

const DEFAULT_MAX_BYTES_PER_PARTITION = 4 * 1024 * 1024;
const FETCH_MAX_BYTES = 16 * 1024 * 1024;

export const DEFAULT_RUNNER_RETRY: RetryPolicy = { ...DEFAULT_RETRY_POLICY, maxAttempts: 20 };

/**
 * How long a joined consumer may go without an answer from its broker (no request answered, no batch being
 * handled) before it is reported not ready, ms: it asks every 0.5 s to 3 s while all is well, and KafkaJS takes
 * up to a minute of retries to give up on a broker that is away.
 */
const UNANSWERED_NOT_READY_MS = 10_000;

export const DEFAULT_RUNNER_RESTART: RetryPolicy = retryPolicy({
  maxAttempts: Infinity,
  initialDelayMs: 250,
  maxDelayMs: 5_000,
});

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
    log,
    retry,
    held,
    handled: options.metrics.counter('urs_messages_total', 'Messages consumed, by topic and outcome.'),
    seconds: options.metrics.histogram('urs_handler_seconds', 'Time spent handling one message, in seconds.'),
  });
  const abort = new AbortController();
  let state: RunnerState = 'created';
  let joined = false;
  let closing: Promise<void> | undefined;

  const restart = options.restart ?? DEFAULT_RUNNER_RESTART;
  const consumer: Consumer = options.kafka.consumer({
    groupId: options.groupId,
    // KafkaJS restarts a crashed consumer by itself only when the error's root cause is `retriable`, after the
    // last retry's delay (up to its maxRetryTime), and leaves it stopped for good otherwise, outages included
    // (see crash.ts). The runner restarts it instead, on its own judgement and pace (onCrash below); the
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
          drainTimeoutMs: positiveInt('drainTimeoutMs', options.drainTimeoutMs, 5_000),
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
  let fail: (error: Error) => void = () => undefined;
  const failure = new Promise<Error>((resolve) => (fail = resolve));
  /** Since when the consumer is down (crashed, not joined again), and its restarts since. */
  let down: { since: number; restarts: number; timer: NodeJS.Timeout | undefined } | undefined;
  consumer.on(consumer.events.GROUP_JOIN, (event) => {
    joined = true;
    keyed?.onGroupJoin(event.payload);
    if (down) {
      log.info('consuming again', { downMs: Date.now() - down.since, restarts: down.restarts });
      down = undefined;
    }
  });
  consumer.on(consumer.events.CRASH, (event) => onCrash(event.payload.error));
  // Proof that the broker answers: a member fetches every maxWaitTimeInMs and heartbeats every 3 s while it
  // has nothing to do. A broker that went away stops these long before KafkaJS gives up on it.
  let answeredAt = Date.now();
  consumer.on(consumer.events.REQUEST, () => (answeredAt = Date.now()));
  /** Batches in eachBatch (ordering 'partition'): the fetch loop waits for them, so nothing is asked meanwhile. */
  let handling = 0;

  /**
   * KafkaJS stopped the consumer (it never restarts it itself, see its `retry` above). What may heal by
   * waiting is restarted, with backoff, until the consumer joins its group again: one warning when it goes
   * down, one line when it is back. Anything else fails the runner.
   */
  function onCrash(error: Error): void {
    joined = false;
    if (state === 'closing' || state === 'closed') return;
    if (!crashHeals(error)) {
      log.error('consumer stopped for good', { error });
      fail(
        new BusError(
          'CONSUMER_STOPPED',
          `Kafka stopped the consumer of group ${options.groupId} with an error that waiting does not mend: ${errorMessage(error)}`,
          { cause: error, details: { groupId: options.groupId } },
        ),
      );
      return;
    }
    if (!down) {
      down = { since: Date.now(), restarts: 0, timer: undefined };
      log.warn('consumer stopped by Kafka; restarting it until it joins its group again', {
        reason: errorMessage(error),
        error,
      });
    } else {
      log.debug('consumer restart failed; trying again', { reason: errorMessage(error) });
    }
    const current = down;
    current.restarts++;
    current.timer = setTimeout(
      () => {
        current.timer = undefined;
        if (state === 'closing' || state === 'closed') return;
        // KafkaJS disconnected it before the crash event; run() builds the group membership and its fetch loop
        // anew (the subscriptions are kept) and reports its own failure as another crash.
        consumer.run(runConfig).catch((failed: unknown) => {
          onCrash(failed instanceof Error ? failed : new Error(String(failed)));
        });
      },
      retryDelayMs(restart, current.restarts),
    );
  }

  const runConfig: ConsumerRunConfig = {
    // Ordering 'key' resolves offsets on accepting a message, ahead of its handling, and commits
    // the finished watermark itself: KafkaJS must not commit resolved offsets.
    // Without commits (commitOffsets false), none: not even the resolved offsets on disconnect.
    autoCommit: keyed === undefined && commit,
    autoCommitInterval: 1_000,
    eachBatchAutoResolve: false,
    partitionsConsumedConcurrently: options.partitionsConsumedConcurrently ?? 1,
    eachBatch: keyed
      ? (payload) => keyed.eachBatch(payload)
      : async (payload) => {
          handling++;
          try {
            await eachBatch(payload);
          } finally {
            handling--;
          }
        },
  };

  /** Handles one message; resolves true when done (handled or dead-lettered), false when stopped first. */
  function handleOne(payload: EachBatchPayload, message: KafkaMessage): Promise<boolean> {
    return settle({
      topic: payload.batch.topic,
      partition: payload.batch.partition,
      message,
      heartbeat: () => payload.heartbeat(),
      stopSignal: abort.signal,
      shouldStop: () => abort.signal.aborted || !payload.isRunning() || payload.isStale(),
      beforeRetry: () => payload.heartbeat(),
    });
  }

  async function eachBatch(payload: EachBatchPayload): Promise<void> {
    for (const message of payload.batch.messages) {
      if (!payload.isRunning() || payload.isStale()) break;
      const done = await handleOne(payload, message);
      if (!done) break;
      payload.resolveOffset(message.offset);
      if (commit) await payload.commitOffsetsIfNecessary();
      await payload.heartbeat();
    }
    if (commit) await payload.commitOffsetsIfNecessary();
  }

  return {
    get state() {
      return state;
    },
    async start() {
      if (state !== 'created') throw new UrsError('RUNNER_STATE', `cannot start a runner that is ${state}`);
      state = 'starting';
      await consumer.connect();
      for (const subscription of options.subscriptions) {
        await consumer.subscribe({
          topic: subscription.topic,
          fromBeginning: subscription.fromBeginning ?? true,
        });
      }
      await consumer.run(runConfig);
      state = 'running';
      log.info('consuming', {
        topics: options.subscriptions.map((subscription) => subscription.topic),
        ordering,
      });
    },
    isReady() {
      const answering = handling > 0 || Date.now() - answeredAt < UNANSWERED_NOT_READY_MS;
      return state === 'running' && joined && answering && !held.isStalled();
    },
    failed() {
      return failure;
    },
    close() {
      closing ??= (async () => {
        const wasStarted = state !== 'created';
        state = 'closing';
        abort.abort();
        clearTimeout(down?.timer);
        // Ordering 'key' commits before disconnecting: a commit needs the member in its group.
        if (keyed && wasStarted) await keyed.drain();
        // disconnect() stops fetching, waits for the running eachBatch, commits resolved offsets
        // (ordering 'partition'), leaves the group.
        await consumer.disconnect();
        state = 'closed';
      })();
      return closing;
    },
  };
}
