import type { KafkaMessage } from 'kafkajs';

/**
 * The messages whose attempts a processor spent and whose dead letter it has not written yet (Kafka refusing it,
 * the runner stopping meanwhile), each with the failure its letter is for. A message given up so (its consumer
 * restarted after a crash, its partition revoked, as every rebalance does, and assigned back) is delivered
 * again to the same processor, which then writes its letter without running its handler again: the handler's
 * calls (the vuln-fetcher's to Defender) were made already, as many times as the retry policy allows.
 *
 * Kept in memory, for as long as the runner lives: a message delivered to another process (another replica
 * after a rebalance, this one after a restart of the process) runs its handler again, once more up to the
 * retry policy's attempts, then is held again on the same refusal (see README, Dead letters). Keeping it
 * across processes would make every message ask Redis before its handler.
 */
export interface SpentMessages {
  /** The message's attempts are spent: its letter is for `error`. */
  remember(topic: string, partition: number, message: KafkaMessage, error: unknown): void;
  /** What the message's letter is for, when it was remembered and not yet forgotten. */
  errorOf(topic: string, partition: number, message: KafkaMessage): { error: unknown } | undefined;
  /** The message's letter is written (or known written): it is handled as any message from now on. */
  forget(topic: string, partition: number, message: KafkaMessage): void;
}

/**
 * At most this many messages are remembered, the oldest forgotten first: each one left unsettled holds its key
 * or its partition, so a handful is usual, and a runner meeting more must not grow without bound.
 */
export const MAX_SPENT_MESSAGES = 1_000;

export function createSpentMessages(limit = MAX_SPENT_MESSAGES): SpentMessages {
  const spent = new Map<string, { error: unknown }>();
  // The broker timestamp tells a record from one a topic deleted and made again holds at the same offset.
  const keyOf = (topic: string, partition: number, message: KafkaMessage): string =>
    `${topic}:${partition}:${message.offset}:${message.timestamp}`;
  return {
    remember(topic, partition, message, error) {
      const key = keyOf(topic, partition, message);
      spent.delete(key);
      spent.set(key, { error });
      if (spent.size > limit) {
        const oldest = spent.keys().next();
        if (!oldest.done) spent.delete(oldest.value);
      }
    },
    errorOf: (topic, partition, message) => spent.get(keyOf(topic, partition, message)),
    forget(topic, partition, message) {
      spent.delete(keyOf(topic, partition, message));
    },
  };
}
