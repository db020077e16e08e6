import type { Consumer, ConsumerRunConfig } from 'kafkajs';
import { compileContracts } from '@urs/contracts';
import { UrsError, errorMessage } from '@urs/resilience';
import { createMessageProcessor } from './handle';
import { createHeldMessages } from './held';
import { DEFAULT_RUNNER_RESTART, createConsumerKeeper } from './keeper';
import { createKeyOrderedConsumption, type KeyOrderedConsumption } from './key-ordered';
import { createPartitionOrderedConsumption } from './partition-ordered';
import { BusError } from './publisher';
import { DEFAULT_RUNNER_RETRY, positiveInt, type ConsumerRunnerOptions } from './runner-options';

export { PoisonMessageError } from './handle';
export { DEFAULT_RUNNER_RESTART } from './keeper';
export type { DeadLetteringMessage, InboundMessage, MessageHandler, TopicSubscription } from './handle';

export type RunnerState = 'created' | 'starting' | 'running' | 'closing' | 'closed';

export interface ConsumerRunner {
  readonly state: RunnerState;
  /** Whether start() was ever called: a runner closed before it never joined its group. */
  readonly startedOnce: boolean;
  /**
   * Connects, subscribes and joins the group. A start whose connect or subscribe failed (Kafka away: KafkaJS
   * gives up after ~1 min of retries) leaves the runner as created, to be started again; one closed meanwhile
   * disconnects what it connected and joins nothing.
   */
  start(): Promise<void>;
  /**
   * Joined the group and consuming. False while its broker has answered nothing for 10 s more than its answers
   * take (away, say; see ConsumerKeeper.isUp), from a crash until the restarted consumer joined its group
   * again, and while messages have been held on an infrastructure fault for longer than heldNotReadyAfterMs.
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
      'Messages held, by consumer group: retried while a dependency (Redis, Kafka) fails them, or their dead letter written again while Kafka refuses it or another process writes it.',
    ),
    labels: { group: options.groupId },
    notReadyAfterMs: positiveInt('heldNotReadyAfterMs', options.heldNotReadyAfterMs, 30_000),
    logIntervalMs: positiveInt('heldLogIntervalMs', options.heldLogIntervalMs, 60_000),
  });
  const handled = options.metrics.counter('urs_messages_total', 'Messages consumed, by topic and outcome.');
  // Each topic's dead letters, and those Kafka refused, served at 0 from the start: UrsMessagesDeadLettered and
  // UrsDeadLetterRefused count their increase, which a topic's first one alone (the series appearing at 1)
  // would not show.
  for (const subscription of options.subscriptions) {
    handled.init({ topic: subscription.topic, outcome: 'dead-lettered' });
    handled.init({ topic: subscription.topic, outcome: 'dead-letter-refused' });
  }
  const settle = createMessageProcessor({
    service: options.service,
    subscriptions: new Map(options.subscriptions.map((subscription) => [subscription.topic, subscription])),
    publisher: options.publisher,
    dlqTopic: options.dlqTopic,
    deadLetters: options.deadLetters,
    log,
    retry,
    held,
    handled,
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
  });
  consumer.on(consumer.events.GROUP_JOIN, (event) => {
    keeper.joined();
    keyed?.onGroupJoin(event.payload);
  });
  // KafkaJS emits CRASH once every batch of the stopped run has returned (and its offsets were committed), so a
  // restart never overlaps the old run's work: a message held then delays the crash, and is not handled twice.
  // Ordering 'key' gives every partition up: the stopped consumer may be out of its group before it joins again.
  consumer.on(consumer.events.CRASH, (event) => {
    keyed?.onCrash();
    keeper.crashed(event.payload.error);
  });
  consumer.on(consumer.events.REQUEST, (event) => keeper.answered(event.payload));

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
      try {
        await consumer.connect();
        for (const subscription of options.subscriptions) {
          await consumer.subscribe({
            topic: subscription.topic,
            fromBeginning: subscription.fromBeginning ?? true,
          });
        }
      } catch (error) {
        // Kafka away (KafkaJS's connect gives up after ~1 min of retries): started again later, afresh.
        if (state === 'starting') state = 'created';
        await consumer.disconnect().catch(() => undefined);
        throw error;
      }
      // Closed meanwhile (a start given up on a stop): close disconnected before this connect was done.
      if (state !== 'starting') {
        await consumer.disconnect();
        return;
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
