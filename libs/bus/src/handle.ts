import type { IHeaders, KafkaMessage } from 'kafkajs';
import { validateMessage, type ContractId, type ContractTypes } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import {
  UrsError,
  errorCode,
  errorMessage,
  isInfrastructureFault,
  retryDelayMs,
  sleep,
  unlessAborted,
  type RetryPolicy,
} from '@urs/resilience';
import type { Counter, Histogram } from '@urs/telemetry';
import { notJsonReason, toDeadLetter, type PayloadRedactor } from './dead-letter';
import { writeDeadLetterOnce, type DeadLetterLedger, type DeadLetterOutcome } from './dead-letter-once';
import type { Hold, HeldMessages, HoldReason } from './held';
import { parseJsonBytes } from './json-bytes';
import type { Publisher } from './publisher';
import { createSpentMessages } from './spent';
import { handlerFailureOf } from './handler-failure';
import { isTransientKafkaError } from './transient';

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
   * asked). Cheap to call often: KafkaJS sends at most one heartbeat per heartbeat interval. Never rejects:
   * with ordering 'partition', a heartbeat that finds the group rebalancing aborts `signal` instead (the
   * message is given up, unfinished, as on close); with ordering 'key' the runner keeps heartbeating on its
   * own, and calling it is harmless.
   */
  heartbeat?: () => Promise<void>;
  /**
   * Aborted when the runner gives the message up: the runner is closing and the drain time passed
   * (ConsumerRunnerOptions.drainTimeoutMs); with ordering 'key', its partition went to another consumer in
   * a rebalance; with ordering 'partition', a heartbeat of its batch found the group rebalancing. A handler that stops early should throw: the message is then neither
   * retried nor dead-lettered, and its offset is not committed (it is handled again by whoever owns the
   * partition next).
   */
  signal?: AbortSignal;
  /**
   * Whether the runner handles this message again should this attempt's handler fail with `error`: as
   * `isHandledAgain` says, and for a failure of the message's own that may go away (`retryable`) only while its
   * attempts are not spent (the runner's retry policy): on the last one it is dead-lettered instead. What a
   * handler keeps for its next try is worth keeping only then. Set by the consumer runner; a handler called
   * otherwise falls back on `isHandledAgain`.
   */
  handledAgainAfter?: (error: unknown) => boolean;
}

export type MessageHandler<T> = (message: InboundMessage<T>) => Promise<void>;

export interface TopicSubscription<K extends ContractId> {
  topic: string;
  contract: K;
  /** Whether null values (compaction tombstones) are handed to the handler. Default false: dead-lettered. */
  tombstones?: boolean;
  /** Read the topic from the beginning when the group has no committed offset. Default true. */
  fromBeginning?: boolean;
  /**
   * The payload of this topic's dead letters. Default `redactPayload`, which knows a secret by its key's
   * name: a topic whose messages may carry a secret under any name (Director's pushes: `clientSecert`,
   * `pwd`) gives its own, keeping only what it knows cannot be one.
   */
  redactPayload?: PayloadRedactor;
  handler: MessageHandler<ContractTypes[K]>;
  /**
   * Runs once each dead letter of this topic is written (again for one found written before: it must be
   * idempotent), so that what the message stood for is recorded as never coming. A Redis or Kafka fault
   * holds the message and tries it again in place (never the handler: the letter is written); a stop
   * meanwhile leaves the message unsettled, and this runs again at its next delivery: to the same runner, its
   * letter written again (found written, with a ledger), not its handler (see SpentMessages); to another
   * process, after its handler (should it fail again, its letter is found written).
   */
  deadLettering?: (message: DeadLetteringMessage) => Promise<void>;
  /**
   * Whether a handler's failure held as a dependency's fault is the service still reading, at its start,
   * what the message needs (a topic read to its end, within a bound of the service's own): held as
   * `catching-up`, counted and warned of, but not counted against readiness (see HoldReason).
   */
  catchingUp?: (error: unknown) => boolean;
}

/** A message about to be dead-lettered, as a topic's `deadLettering` is told of it. */
export interface DeadLetteringMessage {
  topic: string;
  partition: number;
  /** The message's place in its partition: read, though never handled (see `readWhenDeadLettered`). */
  offset: string;
  key: string | null;
  /**
   * The decoded value, or its bytes parsed as JSON when it did not decode; undefined when not JSON. Not
   * redacted, unlike the dead letter's: what is read of it must not be logged or sent on whole.
   */
  payload: unknown;
  /** The failure's code, as the dead letter gives it. */
  code: string;
}

export class PoisonMessageError extends UrsError {
  constructor(code: string, message: string, cause?: unknown) {
    super(code, message, { canRetry: false, cause });
  }
}

/** One message to settle, and how the consumer around it is told to keep going or to stop. */
export interface MessageWork {
  topic: string;
  partition: number;
  message: KafkaMessage;
  /** Handed to the handler (see InboundMessage.heartbeat): never rejects. */
  heartbeat: () => Promise<void>;
  /** Handed to the handler (see InboundMessage.signal). */
  signal?: AbortSignal;
  /** Cuts the pause between two attempts short. */
  stopSignal: AbortSignal;
  /**
   * Asked when the handler failed, and after the pause between two attempts: true (the runner is stopping,
   * or the partition is no longer its own) gives the message up, unfinished.
   */
  shouldStop: () => boolean;
  /** Runs after the pause, before the next attempt (then shouldStop is asked again). Never rejects. */
  beforeRetry: () => Promise<void>;
}

export interface MessageProcessorOptions {
  service: string;
  // Each subscription is typed by its own contract; the union is erased here.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  subscriptions: Map<string, TopicSubscription<any>>;
  publisher: Publisher;
  dlqTopic: string;
  /** Which dead letters the cluster has written (see ConsumerRunnerOptions.deadLetters). */
  deadLetters?: DeadLetterLedger;
  log: Logger;
  retry: RetryPolicy;
  /** Where messages held on an infrastructure fault are counted (see ConsumerRunnerOptions.retry). */
  held: HeldMessages;
  handled: Counter;
  seconds: Histogram;
}

/** Longest key or cycle id a log line carries: both are ids, so anything longer is not one worth printing whole. */
const MAX_LOGGED_ID = 128;

/**
 * A message's payload: `decoded`, the value when it decoded, or else its bytes parsed once more, best
 * effort (a dead letter is rare); undefined when they are not JSON.
 */
function payloadOf(work: MessageWork, decoded: unknown): unknown {
  if (decoded !== undefined || work.message.value === null) return decoded;
  try {
    return parseJsonBytes(work.message.value);
  } catch {
    return undefined;
  }
}

/**
 * What a log line says of a message: where it is, its key (the tenant id on every pipeline topic) and,
 * when its payload is an object with one, its `cycleId`. Nothing else of the payload: it may hold a secret.
 * `payload` is the decoded value, or undefined when the message did not decode (then its bytes are parsed
 * once more, best effort, for the cycle id alone: a dead letter is rare).
 */
function messageLogFields(work: MessageWork, payload: unknown): Record<string, unknown> {
  const { message } = work;
  const fields: Record<string, unknown> = {
    topic: work.topic,
    partition: work.partition,
    offset: message.offset,
  };
  if (message.key !== null) fields['tenantId'] = message.key.toString('utf8').slice(0, MAX_LOGGED_ID);
  const value = payloadOf(work, payload);
  const cycleId =
    typeof value === 'object' && value !== null ? (value as Record<string, unknown>)['cycleId'] : undefined;
  if (typeof cycleId === 'string') fields['cycleId'] = cycleId.slice(0, MAX_LOGGED_ID);
  return fields;
}

/**
 * Settles one message: decode, validate, hand to its handler with retries in place; poison and
 * exhausted retries go to the dead-letter topic. A failure of a dependency every message needs
 * (`isInfrastructureFault`: Redis, Kafka) is not the message's: it is retried with the policy's capped
 * backoff for as long as it lasts, the message held (counted in `held`), never dead-lettered for it.
 * Resolves true when settled (handled or dead-lettered), false when the work was given up first (stop,
 * revocation), whatever the handler threw once it was: a failure while stopping is not the message's. A
 * dead letter the dead-letter topic refuses (on a Kafka fault, or for a reason only an operator mends), or that
 * another process has claimed and not yet written, holds the message, its letter written again in place (see
 * `deadLetter`): the handler never runs again once the message's attempts are spent, neither there nor when the
 * message, given up meanwhile (a stop, a restart of the consumer, a revocation), is delivered again to this
 * processor (see SpentMessages). Another process (a restart of the process, another replica) runs it again.
 */
export function createMessageProcessor(
  options: MessageProcessorOptions,
): (work: MessageWork) => Promise<boolean> {
  const { log, retry, handled, seconds } = options;
  const spent = createSpentMessages();

  function decode(topic: string, message: KafkaMessage): InboundMessage<unknown> {
    const subscription = options.subscriptions.get(topic);
    if (!subscription) throw new PoisonMessageError('TOPIC_UNKNOWN', `no handler for topic ${topic}`);
    let value: unknown = null;
    if (message.value === null) {
      if (!subscription.tombstones)
        throw new PoisonMessageError('TOMBSTONE_UNEXPECTED', 'a null value is not expected on this topic');
    } else {
      let parsed: unknown;
      try {
        parsed = parseJsonBytes(message.value);
      } catch (error) {
        throw new PoisonMessageError('MESSAGE_NOT_JSON', notJsonReason(error));
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

  /**
   * The message held for `error` (`reason`, default a dependency's fault): held now (counted as held, once per
   * hold, not once per attempt), or failed again while held already (`hold`).
   */
  function heldFor(
    hold: Hold | undefined,
    topic: string,
    error: unknown,
    fields: Record<string, unknown>,
    reason: HoldReason = 'dependency',
  ): Hold {
    if (!hold) {
      handled.inc({ topic, outcome: 'held' });
      return options.held.hold(error, fields, reason);
    }
    hold.failedAgain(error, fields, reason);
    return hold;
  }

  /**
   * `payload`: the decoded value, when the message decoded (see messageLogFields). Resolves true when the
   * message is settled (its letter written, now or before). The letter is made once and written again in
   * place, never the handler again (the message's attempts are spent), until it is written: the dead-letter
   * topic refusing it on a fault of Kafka (a leader moving, the broker away, past the publisher's retries), or
   * for a reason only an operator mends (an ACL refusing the topic, a letter larger than the topic takes:
   * logged at error and counted `dead-letter-refused` once per hold), or another process holding the letter's
   * claim (until that process writes the letter or its claim lapses). Meanwhile the message is held (counted as
   * held, as on a Kafka fault in its handler), the attempts paced by the retry policy. Resolves false when the
   * work is stopped first: the message is left unsettled.
   */
  async function deadLetter(work: MessageWork, error: unknown, payload?: unknown): Promise<boolean> {
    const letter = toDeadLetter(
      {
        service: options.service,
        topic: work.topic,
        partition: work.partition,
        offset: work.message.offset,
        key: work.message.key,
        value: work.message.value,
      },
      error,
      { redactPayload: options.subscriptions.get(work.topic)?.redactPayload },
    );
    const source = {
      topic: work.topic,
      partition: work.partition,
      offset: work.message.offset,
      timestamp: work.message.timestamp,
      code: letter.error.code,
    };
    let hold: Hold | undefined;
    /** Holds the message while `failure` keeps the letter unwritten, then waits for the next attempt. */
    const holdBeforeRetry = async (
      failure: unknown,
      reason: HoldReason,
      attempt: number,
      message: string,
      extra: Record<string, unknown> = {},
    ): Promise<boolean> => {
      const fields = messageLogFields(work, payload);
      hold = heldFor(hold, work.topic, failure, fields, reason);
      const delayMs = retryDelayMs(retry, attempt);
      // Warned of once per outage by `held`; each attempt only at debug.
      log.debug(message, { ...fields, attempt, delayMs, code: letter.error.code, ...extra });
      return pauseBeforeRetry(work, delayMs);
    };
    /** Whether this hold's refusal was told: at error and counted once per hold, not once per attempt. */
    let refusalTold = false;
    const tellRefused = (reason: Record<string, unknown>): void => {
      handled.inc({ topic: work.topic, outcome: 'dead-letter-refused' });
      log.error('dead letter refused by Kafka, holding the message until it takes it', {
        ...messageLogFields(work, payload),
        code: letter.error.code,
        ...reason,
      });
    };
    try {
      for (let attempt = 1; ; attempt++) {
        let outcome: DeadLetterOutcome;
        try {
          outcome = await writeDeadLetterOnce(
            options.deadLetters,
            source,
            () =>
              options.publisher.send(options.dlqTopic, 'urs/dead-letter', [
                { key: letter.sourceTopic, value: letter },
              ]),
            log,
          );
        } catch (failure) {
          // The publisher closed under a stop: the message is left unsettled, as any failure while stopping.
          if (work.stopSignal.aborted || work.shouldStop()) return false;
          const reason = { failure: errorCode(failure), reason: errorMessage(failure) };
          const refused = !isInfrastructureFault(failure) && !isTransientKafkaError(failure);
          if (refused) {
            // Refused for a reason waiting alone does not mend (an ACL, a letter too large for the topic): the
            // letter must not be lost, nor the handler run again for it, so it is written again in place until
            // an operator mends the cause, the message held meanwhile.
            if (!refusalTold) tellRefused(reason);
            refusalTold = true;
          }
          const message = refusalTold
            ? 'dead letter refused, holding the message'
            : 'dead letter not written on a dependency, holding the message';
          const holdReason = refused ? 'dead-letter-refused' : 'dependency';
          if (!(await holdBeforeRetry(failure, holdReason, attempt, message, reason))) return false;
          continue;
        }
        if (outcome === 'written-before') {
          // Not `dead-lettered`: the alert on those would fire at every restart of every replica.
          handled.inc({ topic: work.topic, outcome: 'dead-lettered-before' });
          log.debug('message skipped: dead-lettered before', {
            ...messageLogFields(work, payload),
            code: letter.error.code,
          });
          return afterDeadLetter(work, payload, letter.error.code);
        }
        if (outcome === 'written') {
          handled.inc({ topic: work.topic, outcome: 'dead-lettered' });
          log.warn('message dead-lettered', {
            ...messageLogFields(work, payload),
            code: letter.error.code,
            reason: letter.error.message,
          });
          return afterDeadLetter(work, payload, letter.error.code);
        }
        // Another process claimed the letter: skipped now, it would be lost if that process died unwritten.
        const busy = new UrsError(
          'DEAD_LETTER_BUSY',
          `another process is writing this message's dead letter (${letter.error.code})`,
          { canRetry: true, infrastructure: true },
        );
        const message = 'dead letter being written by another process, holding the message';
        if (!(await holdBeforeRetry(busy, 'dead-letter-busy', attempt, message))) return false;
      }
    } finally {
      hold?.release();
    }
  }

  /**
   * The pause before a held message's next attempt, and what the runner does before one (a heartbeat, with
   * ordering 'partition', which may find the group rebalancing); false when the work was stopped meanwhile.
   */
  async function pauseBeforeRetry(work: MessageWork, delayMs: number): Promise<boolean> {
    await sleep(delayMs, work.stopSignal);
    if (work.stopSignal.aborted || work.shouldStop()) return false;
    await work.beforeRetry();
    return !work.stopSignal.aborted && !work.shouldStop();
  }

  /**
   * Runs the topic's `deadLettering` once the message's letter is written (now or before), tried again in
   * place while Redis or Kafka fail it, the message held (as on such a fault in its handler) until it
   * succeeds or the work stops (false: the message is not settled, and its next delivery is handled again).
   * Never the handler again here: the message's letter is on the topic. A failure that waiting does not mend
   * is logged, counted (`dead-lettered-unrecorded`) and let go: the letter is what must not be lost.
   */
  async function afterDeadLetter(work: MessageWork, payload: unknown, code: string): Promise<boolean> {
    const deadLettering = options.subscriptions.get(work.topic)?.deadLettering;
    if (!deadLettering) return true;
    const message: DeadLetteringMessage = {
      topic: work.topic,
      partition: work.partition,
      offset: work.message.offset,
      key: work.message.key === null ? null : work.message.key.toString('utf8'),
      payload: payloadOf(work, payload),
      code,
    };
    let hold: Hold | undefined;
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          // Redis away queues the call's commands: a stop must not wait for them.
          await unlessAborted(deadLettering(message), work.stopSignal);
          return true;
        } catch (error) {
          if (work.stopSignal.aborted) return false;
          const fields = messageLogFields(work, payload);
          if (!isInfrastructureFault(error)) {
            log.error('dead letter written, what it stands for not recorded', { ...fields, code, error });
            handled.inc({ topic: work.topic, outcome: 'dead-lettered-unrecorded' });
            return true;
          }
          hold = heldFor(hold, work.topic, error, fields);
          if (!(await pauseBeforeRetry(work, retryDelayMs(retry, attempt)))) return false;
        }
      }
    } finally {
      hold?.release();
    }
  }

  /**
   * Dead-letters a message whose handler's attempts are spent (`error`): remembered until its letter is written,
   * so that delivered again to this processor meanwhile (see SpentMessages) its handler is not run again.
   */
  async function deadLetterSpent(work: MessageWork, error: unknown, payload: unknown): Promise<boolean> {
    spent.remember(work.topic, work.partition, work.message, error);
    const settled = await deadLetter(work, error, payload);
    if (settled) spent.forget(work.topic, work.partition, work.message);
    return settled;
  }

  return async function settle(work: MessageWork): Promise<boolean> {
    const { topic, message } = work;
    const started = process.hrtime.bigint();
    let inbound: InboundMessage<unknown>;
    try {
      inbound = {
        ...decode(topic, message),
        partition: work.partition,
        heartbeat: work.heartbeat,
        ...(work.signal ? { signal: work.signal } : {}),
      };
    } catch (error) {
      return await deadLetter(work, error);
    }
    const metAgain = spent.errorOf(topic, work.partition, message);
    if (metAgain) {
      log.info(
        'message met again after its attempts were spent, its dead letter unwritten: its handler is not run again',
        {
          ...messageLogFields(work, inbound.value),
          code: errorCode(metAgain.error),
        },
      );
      return await deadLetterSpent(work, metAgain.error, inbound.value);
    }
    const subscription = options.subscriptions.get(topic) as TopicSubscription<ContractId>;
    // The message's own failures, counted against maxAttempts; those of a dependency (Redis, Kafka) are not:
    // the message is held, retried until the dependency is back, and never dead-lettered for it.
    let ownFailures = 0;
    let infrastructureFailures = 0;
    let hold: Hold | undefined;
    inbound.handledAgainAfter = (error) => {
      const failure = handlerFailureOf(error);
      return failure !== 'final' && (failure !== 'retryable' || ownFailures + 1 < retry.maxAttempts);
    };
    try {
      for (;;) {
        try {
          await subscription.handler(inbound as InboundMessage<never>);
          handled.inc({ topic, outcome: 'handled' });
          seconds.observe(Number(process.hrtime.bigint() - started) / 1e9, { topic });
          return true;
        } catch (error) {
          // The runner is stopping or gave the message up: the failure is the stop's (a handler whose calls
          // the service's stop aborted), not the message's. Unfinished: neither counted as an attempt nor
          // dead-lettered, and left uncommitted for whoever handles the partition next.
          if (work.signal?.aborted || work.shouldStop()) return false;
          // A fault of Redis or Kafka is no fault of the message. Nor is Kafka refusing the handler for want of
          // an ACL (the stage's Write on its output topic missing): every message would be refused alike, and
          // dead-lettering them would lose them all; held, they are handled once an operator grants it.
          const failure = handlerFailureOf(error);
          if (failure === 'final') return await deadLetterSpent(work, error, inbound.value);
          const infrastructure = failure === 'dependency';
          const notAuthorized = failure === 'not-authorized';
          let delayMs: number;
          if (infrastructure || notAuthorized) {
            infrastructureFailures++;
            delayMs = retryDelayMs(retry, infrastructureFailures);
            const fields = messageLogFields(work, inbound.value);
            const reason: HoldReason = notAuthorized
              ? 'not-authorized'
              : subscription.catchingUp?.(error) === true
                ? 'catching-up'
                : 'dependency';
            hold = heldFor(hold, topic, error, fields, reason);
            // Warned of once per outage by `held`; each attempt only at debug.
            log.debug('handler failed on a dependency, holding the message', {
              ...fields,
              attempt: infrastructureFailures,
              delayMs,
              code: errorCode(error),
              reason: errorMessage(error),
            });
          } else {
            hold?.release();
            hold = undefined;
            infrastructureFailures = 0;
            ownFailures++;
            if (ownFailures >= retry.maxAttempts) {
              return await deadLetterSpent(
                work,
                new PoisonMessageError(
                  'RETRIES_EXHAUSTED',
                  `gave up after ${ownFailures} attempts: ${errorMessage(error)}`,
                  error,
                ),
                inbound.value,
              );
            }
            delayMs = retryDelayMs(retry, ownFailures);
            log.warn('handler failed, retrying', {
              ...messageLogFields(work, inbound.value),
              attempt: ownFailures,
              delayMs,
              code: errorCode(error),
              reason: errorMessage(error),
            });
            handled.inc({ topic, outcome: 'retried' });
          }
          if (!(await pauseBeforeRetry(work, delayMs))) return false;
        }
      }
    } finally {
      hold?.release();
    }
  };
}

/**
 * Settles one message, trying again (paced by `retry`) should settle reject, which it does not by design (a
 * dead letter refused is written again inside settle, never the handler run again for it): a bug, then, and
 * the message stays unfinished, what is ordered behind it (its key) waiting, each try logged at error.
 * Resolves as settle does: true when settled, false when the work was stopped first.
 */
export async function settleUntilDone(
  settle: (work: MessageWork) => Promise<boolean>,
  work: MessageWork,
  options: { retry: RetryPolicy; log: Logger },
): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await settle(work);
    } catch (error) {
      if (work.shouldStop()) return false;
      const delayMs = retryDelayMs(options.retry, attempt);
      options.log.error('message not settled, trying again', {
        topic: work.topic,
        partition: work.partition,
        offset: work.message.offset,
        attempt,
        delayMs,
        code: errorCode(error),
        reason: errorMessage(error),
      });
      await sleep(delayMs, work.stopSignal);
      if (work.shouldStop()) return false;
    }
  }
}
