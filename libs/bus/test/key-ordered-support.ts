import type { Consumer, ConsumerGroupJoinEvent } from 'kafkajs';
import { silentLogger } from '@urs/logging';
import { retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import type { KeyOrderedOptions } from '../src/key-ordered';

/** The topic of the key-ordered consumption tests. */
export const TOPIC = 'batches';

/** The consumer calls the key-ordered runner makes. */
export const fakeConsumer = {
  pause: () => undefined,
  resume: () => undefined,
  seek: () => undefined,
} as unknown as Consumer;

/** This member's assignment after a rebalance, under `memberId`, as KafkaJS's GROUP_JOIN carries it. */
export const joinedAs = (memberId: string, partitions: number[]): ConsumerGroupJoinEvent['payload'] => ({
  duration: 0,
  groupId: 'group',
  isLeader: true,
  leaderId: memberId,
  groupProtocol: 'RoundRobinAssigner',
  memberId,
  memberAssignment: { [TOPIC]: partitions },
});

/**
 * The options of a key-ordered consumption of TOPIC whose messages `settle` handles: a full partition is
 * read past, and offsets committed, only when a test makes it so (drain commits).
 */
export function keyOrderedOptions(
  settle: KeyOrderedOptions['settle'],
  extra: Partial<KeyOrderedOptions> = {},
): KeyOrderedOptions {
  return {
    consumer: fakeConsumer,
    topics: [TOPIC],
    settle,
    log: silentLogger,
    retry: retryPolicy({ maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 2 }),
    maxBufferedPerPartition: 100,
    maxDeferredPerPartition: 1_000,
    readPastAfterMs: 60_000,
    commitIntervalMs: 60_000,
    drainTimeoutMs: 1_000,
    buffered: new Registry({ processMetrics: false }).gauge('buffered', 'test'),
    deferred: new Registry({ processMetrics: false }).gauge('deferred', 'test'),
    labels: {},
    ...extra,
  };
}
