import type { Consumer, ConsumerGroupJoinEvent, EachBatchPayload, KafkaMessage, Offsets } from 'kafkajs';
import { silentLogger } from '@urs/logging';
import { retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import type { MessageWork } from '../src/handle';
import { createKeyOrderedConsumption, type KeyOrderedOptions } from '../src/key-ordered';

const TOPIC = 'batches';

/** The consumer calls the key-ordered runner makes. */
const fakeConsumer = { pause: () => undefined, resume: () => undefined } as unknown as Consumer;

/** This member's assignment after a rebalance, as KafkaJS's GROUP_JOIN carries it. */
const joined = (partitions: number[]): ConsumerGroupJoinEvent['payload'] => ({
  duration: 0,
  groupId: 'group',
  isLeader: true,
  leaderId: 'member-1',
  groupProtocol: 'RoundRobinAssigner',
  memberId: 'member-1',
  memberAssignment: { [TOPIC]: partitions },
});

/**
 * One fetched batch holding messages with these keys, at offsets 0, 1, ...; what is committed through
 * it goes to `commits` as "partition@offset".
 */
function fetchedBatch(keys: string[], commits: string[], partition = 0): EachBatchPayload {
  const messages = keys.map(
    (key, offset) => ({ key: Buffer.from(key), offset: String(offset) }) as KafkaMessage,
  );
  return {
    batch: {
      topic: TOPIC,
      partition,
      messages,
      lastOffset: () => String(keys.length - 1),
    },
    resolveOffset: () => undefined,
    isRunning: () => true,
    isStale: () => false,
    heartbeat: async () => undefined,
    commitOffsetsIfNecessary: async (offsets: Offsets) => {
      for (const topic of offsets.topics) {
        for (const { partition, offset } of topic.partitions) commits.push(`${partition}@${offset}`);
      }
    },
  } as unknown as EachBatchPayload;
}

/** A handler whose calls wait until the test finishes them, by offset. */
function heldHandler(): {
  settle: (work: MessageWork) => Promise<boolean>;
  started: () => string[];
  finish: (offset: string) => Promise<void>;
} {
  const order: string[] = [];
  const finishers = new Map<string, () => void>();
  return {
    settle: (work) =>
      new Promise<boolean>((resolve) => {
        order.push(work.message.offset);
        finishers.set(work.message.offset, () => resolve(true));
      }),
    started: () => [...order],
    async finish(offset) {
      finishers.get(offset)?.();
      // Lets the runner take the finished message in and start what is due.
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
}

/** A key-ordered consumption of a member assigned partition 0; `fetched` hands it a batch of `partition`. */
function consumption(settle: KeyOrderedOptions['settle'], extra: Partial<KeyOrderedOptions> = {}) {
  const commits: string[] = [];
  const keyed = createKeyOrderedConsumption({
    consumer: fakeConsumer,
    topics: [TOPIC],
    settle,
    log: silentLogger,
    retry: retryPolicy({ maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 2 }),
    maxBufferedPerPartition: 100,
    commitIntervalMs: 60_000,
    drainTimeoutMs: 1_000,
    buffered: new Registry({ processMetrics: false }).gauge('buffered', 'test'),
    labels: {},
    ...extra,
  });
  keyed.onGroupJoin(joined([0]));
  return {
    keyed,
    commits,
    fetched: (keys: string[], partition = 0) => fetchedBatch(keys, commits, partition),
  };
}

describe('createKeyOrderedConsumption', () => {
  it("should run a key's next message while the one before it is still handled, two at a time by default", async () => {
    const handler = heldHandler();
    const { keyed, fetched } = consumption(handler.settle);
    await keyed.eachBatch(fetched(['t', 't', 't', 'u']));
    expect(handler.started()).toEqual(['0', '1', '3']);

    await handler.finish('0');
    expect(handler.started()).toEqual(['0', '1', '3', '2']);
    for (const offset of ['1', '2', '3']) await handler.finish(offset);
    await keyed.drain();
  });

  it('should start a message only once the message of its key two places before it finished', async () => {
    const handler = heldHandler();
    const { keyed, fetched } = consumption(handler.settle);
    await keyed.eachBatch(fetched(['t', 't', 't', 't']));
    // The second finishing first does not let the third start: the first still holds the window.
    await handler.finish('1');
    expect(handler.started()).toEqual(['0', '1']);
    await handler.finish('0');
    expect(handler.started()).toEqual(['0', '1', '2', '3']);
    for (const offset of ['2', '3']) await handler.finish(offset);
    await keyed.drain();
  });

  it('should commit only below the oldest unfinished message while later ones of its key finished', async () => {
    const handler = heldHandler();
    const { keyed, commits, fetched } = consumption(handler.settle, { drainTimeoutMs: 50 });
    await keyed.eachBatch(fetched(['t', 't']));
    await handler.finish('1');
    // Closing commits the watermark: offset 0 is unfinished, so nothing past it is committed.
    await keyed.drain();
    expect(commits).toEqual(['0@0']);
  });

  it('should commit past both once the older message finishes too', async () => {
    const handler = heldHandler();
    const { keyed, commits, fetched } = consumption(handler.settle);
    await keyed.eachBatch(fetched(['t', 't']));
    await handler.finish('1');
    await handler.finish('0');
    await keyed.drain();
    expect(commits).toEqual(['0@2']);
  });

  it('should keep a key to one message at a time when told inFlightPerKey 1', async () => {
    const handler = heldHandler();
    const { keyed, fetched } = consumption(handler.settle, { inFlightPerKey: 1 });
    await keyed.eachBatch(fetched(['t', 't']));
    expect(handler.started()).toEqual(['0']);
    await handler.finish('0');
    expect(handler.started()).toEqual(['0', '1']);
    await handler.finish('1');
    await keyed.drain();
  });

  it('should leave a batch fetched before a rebalance, of a partition that moved, to its new owner, and take the partition afresh when it comes back', async () => {
    const handled: string[] = [];
    const { keyed, commits, fetched } = consumption(async (work) => {
      handled.push(`${work.partition}@${work.message.offset}`);
      return true;
    });
    keyed.onGroupJoin(joined([0, 1]));
    await keyed.eachBatch(fetched(['t'], 0));
    keyed.onGroupJoin(joined([0]));
    await keyed.eachBatch(fetched(['u', 'u'], 1));
    await new Promise((resolve) => setImmediate(resolve));
    expect(handled).toEqual(['0@0']);
    // Back here, the partition is read from its committed offset with nothing of before.
    keyed.onGroupJoin(joined([0, 1]));
    await keyed.eachBatch(fetched(['u', 'u'], 1));
    await keyed.drain();
    expect(handled).toEqual(['0@0', '1@0', '1@1']);
    expect(commits.sort()).toEqual(['0@1', '1@2']);
  });
});
