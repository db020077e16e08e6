import type { Consumer, EachBatchPayload, IHeaders, Kafka, KafkaMessage } from 'kafkajs';
import { validateMessage, type ContractId, type ContractTypes } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import {
  DEFAULT_RETRY_POLICY,
  UrsError,
  canRetry,
  errorCode,
  errorMessage,
  retryDelayMs,
  sleep,
  type RetryPolicy,
} from '@urs/resilience';
import type { Registry } from '@urs/telemetry';
import { toDeadLetter } from './dead-letter';
import type { Publisher } from './publisher';

/** A consumed message, decoded and validated. `value` is null for a tombstone. */
export interface InboundMessage<T> {
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  value: T | null;
  headers: IHeaders;
  /** Broker timestamp, epoch milliseconds. */
  timestamp: number;
  /**
   * Keeps the consumer's group membership alive during a long handler (KafkaJS heartbeats only when
   * asked). Cheap to call often: KafkaJS sends at most one heartbeat per heartbeat interval.
   */
  heartbeat?: () => Promise<void>;
}

export type MessageHandler<T> = (message: InboundMessage<T>) => Promise<void>;

export interface TopicSubscription<K extends ContractId> {
  topic: string;
  contract: K;
  /** Whether null values (compaction tombstones) are handed to the handler. Default false: dead-lettered. */
  tombstones?: boolean;
  /** Read the topic from the beginning when the group has no committed offset. Default true. */
  fromBeginning?: boolean;
  handler: MessageHandler<ContractTypes[K]>;
}

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
   * Retries of a handler's retryable failure, in place (the partition waits, so order holds).
   * Past maxAttempts the message is dead-lettered with code RETRIES_EXHAUSTED. Default: 20 attempts,
   * 200 ms to 10 s apart.
   */
  retry?: RetryPolicy;
  /** Partitions handled at once. Default 1. Order within a partition is always kept. */
  partitionsConsumedConcurrently?: number;
  /** KafkaJS session timeout, ms. Default 30000. */
  sessionTimeoutMs?: number;
}

export type RunnerState = 'created' | 'starting' | 'running' | 'closing' | 'closed';

export interface ConsumerRunner {
  readonly state: RunnerState;
  start(): Promise<void>;
  /** Joined the group and consuming. */
  isReady(): boolean;
  /** Stops intake, lets the in-flight message finish, commits what was handled, disconnects. Idempotent. */
  close(): Promise<void>;
}

export class PoisonMessageError extends UrsError {
  constructor(code: string, message: string, cause?: unknown) {
    super(code, message, { canRetry: false, cause });
  }
}

export const DEFAULT_RUNNER_RETRY: RetryPolicy = { ...DEFAULT_RETRY_POLICY, maxAttempts: 20 };

/**
 * Runs handlers over Kafka at least once: a message's offset is committed only after its handler's
 * effects are done, or after it was dead-lettered. Poison input (not JSON, not matching its contract,
 * or a handler's non-retryable error) goes to the dead-letter topic with its reason and the worker
 * goes on; retryable failures are retried in place with backoff.
 */
export function createConsumerRunner(options: ConsumerRunnerOptions): ConsumerRunner {
  const log = options.logger.child({ component: 'consumer', groupId: options.groupId });
  const retry = options.retry ?? DEFAULT_RUNNER_RETRY;
  const bySubscription = new Map(
    options.subscriptions.map((subscription) => [subscription.topic, subscription]),
  );
  const handled = options.metrics.counter('urs_messages_total', 'Messages consumed, by topic and outcome.');
  const seconds = options.metrics.histogram(
    'urs_handler_seconds',
    'Time spent handling one message, in seconds.',
  );
  const abort = new AbortController();
  let state: RunnerState = 'created';
  let joined = false;
  let closing: Promise<void> | undefined;

  const consumer: Consumer = options.kafka.consumer({
    groupId: options.groupId,
    sessionTimeout: options.sessionTimeoutMs ?? 30_000,
    // A fetch answers as soon as a message arrives, so this only bounds how long an idle fetch blocks
    // disconnect() on shutdown (KafkaJS default: 5 s).
    maxWaitTimeInMs: 1_000,
    allowAutoTopicCreation: false,
  });
  consumer.on(consumer.events.GROUP_JOIN, () => {
    joined = true;
  });
  consumer.on(consumer.events.CRASH, (event) => {
    joined = false;
    log.error('consumer crashed', { error: event.payload.error, restart: event.payload.restart });
  });

  function decode(topic: string, message: KafkaMessage): InboundMessage<unknown> {
    const subscription = bySubscription.get(topic);
    if (!subscription) throw new PoisonMessageError('TOPIC_UNKNOWN', `no handler for topic ${topic}`);
    let value: unknown = null;
    if (message.value === null) {
      if (!subscription.tombstones)
        throw new PoisonMessageError('TOMBSTONE_UNEXPECTED', 'a null value is not expected on this topic');
    } else {
      let parsed: unknown;
      try {
        parsed = JSON.parse(message.value.toString('utf8'));
      } catch (error) {
        throw new PoisonMessageError(
          'MESSAGE_NOT_JSON',
          `the value is not JSON: ${errorMessage(error)}`,
          error,
        );
      }
      value = validateMessage(subscription.contract, parsed);
    }
    return {
      topic,
      partition: 0,
      offset: message.offset,
      key: message.key === null ? null : message.key.toString('utf8'),
      value,
      headers: message.headers ?? {},
      timestamp: Number(message.timestamp),
    };
  }

  async function deadLetter(payload: EachBatchPayload, message: KafkaMessage, error: unknown): Promise<void> {
    const letter = toDeadLetter(
      {
        service: options.service,
        topic: payload.batch.topic,
        partition: payload.batch.partition,
        offset: message.offset,
        key: message.key,
        value: message.value,
      },
      error,
    );
    // The dead letter itself must not be lost: if Kafka refuses it, the batch fails and is redelivered.
    await options.publisher.send(options.dlqTopic, 'urs/dead-letter', [
      { key: letter.sourceTopic, value: letter },
    ]);
    log.warn('message dead-lettered', {
      topic: letter.sourceTopic,
      partition: letter.partition,
      offset: letter.offset,
      code: letter.error.code,
      reason: letter.error.message,
    });
  }

  /** Handles one message; resolves true when done (handled or dead-lettered), false when stopped first. */
  async function handleOne(payload: EachBatchPayload, message: KafkaMessage): Promise<boolean> {
    const topic = payload.batch.topic;
    const started = process.hrtime.bigint();
    let inbound: InboundMessage<unknown>;
    try {
      inbound = {
        ...decode(topic, message),
        partition: payload.batch.partition,
        heartbeat: () => payload.heartbeat(),
      };
    } catch (error) {
      await deadLetter(payload, message, error);
      handled.inc({ topic, outcome: 'dead-lettered' });
      return true;
    }
    const subscription = bySubscription.get(topic) as TopicSubscription<ContractId>;
    for (let attempt = 1; ; attempt++) {
      try {
        await subscription.handler(inbound as InboundMessage<never>);
        handled.inc({ topic, outcome: 'handled' });
        seconds.observe(Number(process.hrtime.bigint() - started) / 1e9, { topic });
        return true;
      } catch (error) {
        if (!canRetry(error)) {
          await deadLetter(payload, message, error);
          handled.inc({ topic, outcome: 'dead-lettered' });
          return true;
        }
        if (attempt >= retry.maxAttempts) {
          await deadLetter(
            payload,
            message,
            new PoisonMessageError(
              'RETRIES_EXHAUSTED',
              `gave up after ${attempt} attempts: ${errorMessage(error)}`,
              error,
            ),
          );
          handled.inc({ topic, outcome: 'dead-lettered' });
          return true;
        }
        const delayMs = retryDelayMs(retry, attempt);
        log.warn('handler failed, retrying', {
          topic,
          partition: payload.batch.partition,
          offset: message.offset,
          attempt,
          delayMs,
          code: errorCode(error),
          reason: errorMessage(error),
        });
        handled.inc({ topic, outcome: 'retried' });
        await sleep(delayMs, abort.signal);
        if (abort.signal.aborted || !payload.isRunning() || payload.isStale()) return false;
        await payload.heartbeat();
      }
    }
  }

  async function eachBatch(payload: EachBatchPayload): Promise<void> {
    for (const message of payload.batch.messages) {
      if (!payload.isRunning() || payload.isStale()) break;
      const done = await handleOne(payload, message);
      if (!done) break;
      payload.resolveOffset(message.offset);
      await payload.commitOffsetsIfNecessary();
      await payload.heartbeat();
    }
    await payload.commitOffsetsIfNecessary();
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
      await consumer.run({
        autoCommit: true,
        autoCommitInterval: 1_000,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: options.partitionsConsumedConcurrently ?? 1,
        eachBatch,
      });
      state = 'running';
      log.info('consuming', { topics: options.subscriptions.map((subscription) => subscription.topic) });
    },
    isReady() {
      return state === 'running' && joined;
    },
    close() {
      closing ??= (async () => {
        state = 'closing';
        abort.abort();
        // disconnect() stops fetching, waits for the running eachBatch, commits resolved offsets, leaves the group.
        await consumer.disconnect();
        state = 'closed';
      })();
      return closing;
    },
  };
}
