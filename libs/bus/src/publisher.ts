import type { IHeaders, Kafka, Producer } from 'kafkajs';
import { validateMessage, type ContractId, type ContractTypes } from '@urs/contracts';
import { UrsError, retryPolicy, sleep, withRetry, type RetryPolicy } from '@urs/resilience';
import { JavaCompatiblePartitioner } from './partitioner';
import { isSizeRefusal, isTransientKafkaError, kafkaRecordRefusalOf } from './transient';

export interface OutboundMessage<T> {
  key: string;
  /** null produces a tombstone (compacted topics). */
  value: T | null;
  /**
   * `value` already serialised, when the producer built that text anyway (e.g. from parts it also
   * stores elsewhere): `JSON.stringify(value)`, or JSON bytes of the same value (`jsonBatchBytes`). The
   * value is still validated; the text is sent as it is instead of serialising the value again.
   */
  json?: string | Buffer;
  /**
   * Set when `value` is known to meet the contract already: built only of parts that were each validated
   * under the contract's own rules (a consumed message's items, say, whose rules the contract repeats, with
   * the rest checked in another message of the same send). It is then sent without being validated again;
   * everything else about the send is the same.
   */
  checked?: true;
  headers?: IHeaders;
}

export interface Publisher {
  /**
   * Validates every value against its contract (but those marked `checked`), then produces them all,
   * acknowledged by all in-sync replicas: in one request, or in consecutive ones of at most `MAX_SEND_BYTES`
   * each, in order.
   */
  send<K extends ContractId>(
    topic: string,
    contract: K,
    messages: OutboundMessage<ContractTypes[K]>[],
  ): Promise<void>;
  /** Produces already-serialised values (the dead-letter path, which must not fail validation again). */
  sendRaw(topic: string, messages: { key: string | null; value: string | null }[]): Promise<void>;
  close(): Promise<void>;
}

export class BusError extends UrsError {}

/** A message as it is produced: its value serialised (or null, a tombstone). */
interface OutboundRecord {
  key: string | null;
  value: string | Buffer | null;
  headers?: IHeaders;
}

/**
 * Validates a value against its contract, unless it is `checked` already, and answers its JSON (the given
 * text when there is one).
 */
function encode(
  contract: ContractId,
  value: unknown,
  json: string | Buffer | undefined,
  checked: true | undefined,
): string | Buffer {
  const valid = checked ? value : validateMessage(contract, value);
  return json ?? JSON.stringify(valid);
}

/**
 * Bytes of keys and values produced in one request at most. The messages of one key go to one partition
 * in one record batch, which the broker refuses above the topic's `max.message.bytes` (8 MiB here, see
 * topics.ts) with a non-retriable MESSAGE_TOO_LARGE: a bulk cycle's last batch with ~26,000 devices'
 * corrections was one such send, refused at every attempt. Half of it leaves room for Kafka's own framing.
 */
export const MAX_SEND_BYTES = 4 * 1024 * 1024;

/** Bytes a record batch of one record takes beyond its key and value, at least: 1 KiB kept below the limit. */
const RECORD_FRAMING_BYTES = 1024;

/**
 * The bytes of key and value (`recordBytes`) a record may have for a topic of `maxMessageBytes` (its
 * `max.message.bytes`) to surely take it alone: half, the room `MAX_SEND_BYTES` leaves of the topics' 8 MiB for
 * Kafka's own framing, and at least 1 KiB below the limit (a small topic's): the limit less 1 KiB for a limit
 * of 2 KiB or less, 0 for a limit of 1 KiB or less.
 */
export const surelyTakenRecordBytes = (maxMessageBytes: number): number =>
  Math.max(0, Math.min(Math.floor(maxMessageBytes / 2), maxMessageBytes - RECORD_FRAMING_BYTES));

/** A message's bytes of key and value, as `sizedGroups` counts them against `MAX_SEND_BYTES`. */
export const recordBytes = (message: { key: string | null; value: string | Buffer | null }): number =>
  (message.key === null ? 0 : Buffer.byteLength(message.key)) +
  (message.value === null ? 0 : Buffer.byteLength(message.value));

/**
 * The messages in consecutive groups of at most `maxBytes` of keys and values (a message larger than that
 * alone), in their order: sent one group after the other, a key's messages keep their order.
 */
export function sizedGroups<M extends { key: string | null; value: string | Buffer | null }>(
  messages: M[],
  maxBytes: number = MAX_SEND_BYTES,
): M[][] {
  const groups: M[][] = [];
  let group: M[] = [];
  let bytes = 0;
  for (const message of messages) {
    const size = recordBytes(message);
    if (group.length > 0 && bytes + size > maxBytes) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(message);
    bytes += size;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}

/** Causes followed at most this deep looking for the broker's answer: KafkaJS wraps it once or twice. */
const MAX_CAUSE_DEPTH = 5;

/** Whether the broker answered UNKNOWN_TOPIC_OR_PARTITION, as `error` or as one of its causes. */
function isUnknownTopic(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > MAX_CAUSE_DEPTH) return false;
  const e = error as { type?: unknown; cause?: unknown };
  return e.type === 'UNKNOWN_TOPIC_OR_PARTITION' || isUnknownTopic(e.cause, depth + 1);
}

/**
 * What a produce failed with, in terms an operator can act on. Topics are created only at the start
 * (bootstrapTopics), so a topic deleted since is not made again, and every send to it fails until it is:
 * the error names the topic and what to do. It stays retryable and an infrastructure fault (its cause, the
 * broker's answer, is one): a consumer holds its message, and its warning that messages are held (at most one
 * a minute, not one per retry) carries this code and message. Kafka refusing a record of `group`, the request
 * that failed, for what it holds is said so (recordRefused). Anything else is passed on as it is.
 */
function produceFailure(topic: string, group: OutboundRecord[], error: unknown): unknown {
  const refusal = kafkaRecordRefusalOf(error);
  if (refusal !== undefined) return recordRefused(topic, group, refusal, error);
  if (!isUnknownTopic(error)) return error;
  return new BusError(
    'TOPIC_MISSING',
    `topic ${topic} not found on the broker after the producer's retries: deleted (recreate it, or restart the service: topics are created at start), or the broker's metadata still lags after a restart`,
    { canRetry: true, infrastructure: true, cause: error, details: { topic } },
  );
}

/**
 * Kafka refusing what a request carried (kafkaRecordRefusalOf): for good, sent again it is refused again, so not
 * retryable (the consumer runner dead-letters the message at once, its handler not run again). Too large
 * (`RECORD_TOO_LARGE`): the message names the topic, the largest record's bytes and the request's, for an
 * operator to tell a record too large alone from one request's too many. Invalid otherwise (`RECORD_REFUSED`).
 */
function recordRefused(topic: string, group: OutboundRecord[], type: string, error: unknown): BusError {
  // A request may hold tens of thousands of records: no spread into Math.max's arguments.
  const sizes = group.map(recordBytes);
  const largest = sizes.reduce((most, size) => Math.max(most, size), 0);
  const total = sizes.reduce((sum, size) => sum + size, 0);
  const details = {
    topic,
    refusal: type,
    largestRecordBytes: largest,
    records: group.length,
    requestBytes: total,
  };
  if (isSizeRefusal(type)) {
    return new BusError(
      'RECORD_TOO_LARGE',
      `topic ${topic} refused a record as too large (${type}): the largest record ${largest} bytes of key and ` +
        `value, the request's ${group.length} records ${total} bytes; a partition's records in one request ` +
        "must fit the topic's max.message.bytes. Refused again if sent again: not retried",
      { canRetry: false, cause: error, details },
    );
  }
  return new BusError(
    'RECORD_REFUSED',
    `topic ${topic} refused a record as invalid (${type}): ${error instanceof Error ? error.message : String(error)}. ` +
      'Refused again if sent again: not retried',
    { canRetry: false, cause: error, details },
  );
}

export interface PublisherOptions {
  /**
   * How long a send that fails on what may heal (a broker away, a leader moving: isTransientKafkaError) is
   * tried again, from its first attempt, in ms, paced by PUBLISHER_SEND_RETRY: for a client of no retries of
   * its own (createKafka's `retries: 0`), whose connect and attempts are then single tries. close() ends a
   * send's tries at once, so nothing of the publisher outlives it, as KafkaJS's own retries would (they cannot
   * be stopped). The producer's own retries of a send are then off too. An attempt is made again whole: one
   * that failed at one broker sends its messages to the others again too, which their consumers take again as
   * after any produce tried again (at least once). Default 0: a send is tried once here, and only KafkaJS's
   * retries (the producer's and its client's) apply.
   */
  retryForMs?: number;
}

/** The waits between a send's attempts (PublisherOptions.retryForMs): from 300 ms, at most 5 s apart. */
export const PUBLISHER_SEND_RETRY: RetryPolicy = retryPolicy({
  maxAttempts: Infinity,
  initialDelayMs: 300,
  maxDelayMs: 5_000,
});

/**
 * Connects a producer (with its client's retries: one try on a client of none) and publishes with it. A
 * connect that fails leaves nothing connected.
 */
export async function createPublisher(kafka: Kafka, options: PublisherOptions = {}): Promise<Publisher> {
  const retryForMs = options.retryForMs ?? 0;
  const producer: Producer = kafka.producer({
    createPartitioner: JavaCompatiblePartitioner,
    allowAutoTopicCreation: false,
    // Retrying here, the producer's own retries of a send (KafkaJS's default 5, whatever the client's) are off.
    ...(retryForMs > 0 ? { retry: { retries: 0 } } : {}),
  });
  try {
    await producer.connect();
  } catch (error) {
    await producer.disconnect().catch(() => undefined);
    throw error;
  }
  /** Aborted by close(): no send is tried again. */
  const stopped = new AbortController();
  /** The attempts under way, which close() waits for before it disconnects the last time. */
  const attempts = new Set<Promise<unknown>>();
  /** One request's messages, tried again while it fails on what may heal, until `deadline` or close(). */
  async function sendGroup(topic: string, group: OutboundRecord[], deadline: number): Promise<void> {
    await withRetry(
      async () => {
        const sending = producer.send({ topic, acks: -1, messages: group });
        attempts.add(sending);
        try {
          await sending;
        } finally {
          attempts.delete(sending);
        }
      },
      {
        policy: PUBLISHER_SEND_RETRY,
        signal: stopped.signal,
        shouldRetry: (error) => Date.now() < deadline && isTransientKafkaError(error),
        // The last wait ends at the deadline, so one more attempt is made right at it.
        sleep: (ms, signal) => sleep(Math.max(0, Math.min(ms, deadline - Date.now())), signal),
      },
    );
  }
  /**
   * Produces `messages` in requests of at most MAX_SEND_BYTES, in order, acknowledged by all in-sync replicas,
   * tried again for retryForMs from the send's start (not from each request's: a send of k requests would
   * otherwise be tried for up to k × retryForMs).
   */
  async function produce(topic: string, messages: OutboundRecord[]): Promise<void> {
    const deadline = Date.now() + retryForMs;
    for (const group of sizedGroups(messages)) {
      try {
        await sendGroup(topic, group, deadline);
      } catch (error) {
        throw produceFailure(topic, group, error);
      }
    }
  }
  /**
   * Ends every send's tries, then disconnects. KafkaJS's disconnect waits for the requests in flight, and an
   * attempt that fails as its connection closes connects its client again (one try, with no retries): it is
   * disconnected again once the attempts settled.
   */
  async function disconnect(): Promise<void> {
    stopped.abort();
    await producer.disconnect();
    if (retryForMs > 0 && attempts.size > 0) {
      await Promise.allSettled([...attempts]);
      await producer.disconnect();
    }
  }
  let closing: Promise<void> | undefined;
  return {
    async send(topic, contract, messages) {
      if (closing) throw new BusError('BUS_CLOSED', 'the publisher is closed', { canRetry: false });
      if (messages.length === 0) return;
      const encoded = messages.map((message) => ({
        key: message.key,
        value: message.value === null ? null : encode(contract, message.value, message.json, message.checked),
        ...(message.headers ? { headers: message.headers } : {}),
      }));
      await produce(topic, encoded);
    },
    async sendRaw(topic, messages) {
      if (messages.length === 0) return;
      await produce(topic, messages);
    },
    close() {
      closing ??= disconnect();
      return closing;
    },
  };
}
