import { randomBytes } from 'node:crypto';
import type { Kafka, KafkaMessage } from 'kafkajs';
import { errorMessage, sleep } from '@urs/resilience';
import { crashHeals } from './crash';
import type { ContractId } from '@urs/contracts';
import type { DeadLetteringMessage, TopicSubscription } from './handle';
import { BusError } from './publisher';
import type { PartitionOffsetRange } from './settle';

/**
 * The last offset of each partition that holds a record (`topicOffsets`' ranges): the targets of a read of
 * the topic up to its end as it is now (`readTopicUpTo`). A partition without records is left out.
 */
export function lastOffsets(offsets: readonly PartitionOffsetRange[]): Map<number, bigint> {
  return new Map(
    offsets
      .filter((o) => BigInt(o.high) > BigInt(o.low))
      .map((o) => [o.partition, BigInt(o.high) - 1n] as const),
  );
}

/**
 * How far a reader of a topic from its beginning (a consumer group of its own, at every start) got towards
 * the end the topic had when it started: what it holds is complete once every partition was read up to
 * that end. Told each offset read (`read`) and the end to reach (`expectEnd`, from `lastOffsets`), in
 * either order: what was read before the end was known counts.
 */
export interface CatchUp {
  /** An offset of `partition` was read (handled, or skipped as of no use). */
  read(partition: number, offset: string): void;
  /** The last offset of each partition when the reader started (`lastOffsets`): what must be read. */
  expectEnd(lastOffsets: Map<number, bigint>): void;
  /** Every partition was read up to its expected end; false until that end is known. */
  caughtUp(): boolean;
  /**
   * Stops waiting for the offsets still missing (a reader that no longer moves: a message held while its
   * dead letter cannot be written); returns how many partitions were still behind.
   */
  stopWaiting(): number;
}

export function createCatchUp(): CatchUp {
  let remaining: Map<number, bigint> | undefined;
  const seen = new Map<number, bigint>();
  return {
    read(partition, offset) {
      const current = seen.get(partition);
      if (current === undefined || BigInt(offset) > current) seen.set(partition, BigInt(offset));
      const target = remaining?.get(partition);
      if (target !== undefined && BigInt(offset) >= target) remaining?.delete(partition);
    },
    expectEnd(lastOffsets) {
      remaining = new Map(
        [...lastOffsets].filter(
          ([partition, offset]) => offset >= 0n && (seen.get(partition) ?? -1n) < offset,
        ),
      );
    },
    caughtUp: () => remaining !== undefined && remaining.size === 0,
    stopWaiting() {
      const behind = remaining?.size ?? 0;
      remaining = new Map();
      return behind;
    },
  };
}

/**
 * Stops `catchUp` waiting once `timeoutMs` passed from this call without it reaching the end it expects (a reader
 * that no longer moves would otherwise keep its service waiting for ever): `gaveUp` is told how many partitions
 * were still behind. Returns what cancels the timer (at the stop); the timer keeps no process alive.
 */
export function stopWaitingAfter(
  catchUp: Pick<CatchUp, 'stopWaiting'>,
  timeoutMs: number,
  gaveUp: (behind: number) => void,
): () => void {
  const timer = setTimeout(() => {
    const behind = catchUp.stopWaiting();
    if (behind > 0) gaveUp(behind);
  }, timeoutMs);
  timer.unref();
  return () => clearTimeout(timer);
}

/**
 * The `deadLettering` of a topic whose reader tells `catchUp` each offset its handler reads: a message
 * dead-lettered (invalid, or failed for good) never reaches the handler, yet it was read; were it its
 * partition's last, the reader would otherwise never catch up.
 */
export function readWhenDeadLettered(
  catchUp: Pick<CatchUp, 'read'>,
): (message: DeadLetteringMessage) => Promise<void> {
  return async (message) => catchUp.read(message.partition, message.offset);
}

/**
 * The subscription of a topic read whole from its beginning at every start, tombstones included, by a reader
 * that tells `catchUp` each offset `handler` reads: the ones dead-lettered are told too
 * (`readWhenDeadLettered`).
 */
export function readToEndSubscription<K extends ContractId>(
  topic: string,
  contract: K,
  handler: TopicSubscription<K>['handler'],
  catchUp: Pick<CatchUp, 'read'>,
): TopicSubscription<K> {
  return {
    topic,
    contract,
    tombstones: true,
    fromBeginning: true,
    handler,
    deadLettering: readWhenDeadLettered(catchUp),
  };
}

/**
 * Reads `topic` from its beginning up to `targets` (per partition, the last offset to read; a partition
 * without one is not read) with a consumer group of its own (KafkaJS has no manual assignment), which is
 * deleted afterwards, and hands the messages of each fetched batch to `onBatch`, in order within their
 * partition, one batch after the other (the next is fetched once `onBatch` resolved). A consumer that Kafka
 * stopped (a crash KafkaJS does not restart) fails the read at once with a `BusError` `CONSUMER_STOPPED`
 * saying why: it would read nothing more, and waiting out `timeoutMs` would only hide the reason. Retryable
 * when what stopped it heals by waiting (crashHeals: a broker away or restarting, no group coordinator yet,
 * a rebalance; KafkaJS stops a consumer for many of these for good), so the read is tried again; not when
 * it does not (an authorisation or a configuration refused). A failed `onBatch` fails the read with its error,
 * and so does `signal` aborting (with its reason): the consumer is stopped and its group deleted either way.
 */
export async function readTopicUpTo(
  kafka: Kafka,
  topic: string,
  targets: Map<number, bigint>,
  groupPrefix: string,
  timeoutMs: number,
  onBatch: (messages: KafkaMessage[]) => void | Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  if (targets.size === 0) return;
  signal?.throwIfAborted();
  const pending = new Set(targets.keys());
  const admin = kafka.admin();
  await admin.connect();
  const groupId = `${groupPrefix}.rebuild.${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  try {
    const consumer = kafka.consumer({ groupId, allowAutoTopicCreation: false });
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    let stop!: (error: Error) => void;
    const stopped = new Promise<Error>((resolve) => (stop = resolve));
    consumer.on(consumer.events.CRASH, (event) => {
      if (event.payload.restart) return;
      const { error } = event.payload;
      stop(
        new BusError(
          'CONSUMER_STOPPED',
          `reading ${topic}: Kafka stopped its consumer: ${errorMessage(error)}`,
          {
            canRetry: crashHeals(error),
            cause: error,
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
          const target = targets.get(batch.partition);
          if (target === undefined || !pending.has(batch.partition)) return;
          try {
            await onBatch(batch.messages.filter((message) => BigInt(message.offset) <= target));
          } catch (error) {
            stop(error instanceof Error ? error : new Error(errorMessage(error)));
            return;
          }
          if (BigInt(batch.lastOffset()) >= target) {
            pending.delete(batch.partition);
            if (pending.size === 0) done();
          }
        },
      });
      const timer = new AbortController();
      const aborted = new Promise<unknown>((resolve) => {
        if (signal?.aborted) return resolve(signal.reason);
        signal?.addEventListener('abort', () => resolve(signal.reason), { once: true, signal: timer.signal });
      });
      const failure = await Promise.race([
        finished.then(() => undefined),
        stopped,
        aborted,
        // Kafka slow or away (a rebuild during an outage): no fault of the message that asked for the read,
        // which the bus then holds instead of dead-lettering it.
        sleep(timeoutMs, timer.signal).then(
          () =>
            new BusError('READ_TIMEOUT', `reading ${topic} did not reach its end within ${timeoutMs} ms`, {
              canRetry: true,
              infrastructure: true,
              details: { topic },
            }),
        ),
      ]);
      timer.abort();
      if (failure) throw failure;
    } finally {
      await consumer.disconnect();
    }
  } finally {
    await admin.deleteGroups([groupId]).catch(() => undefined);
    await admin.disconnect();
  }
}
