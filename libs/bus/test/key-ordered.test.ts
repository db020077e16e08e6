import type { Consumer, ConsumerGroupJoinEvent, EachBatchPayload, KafkaMessage, Offsets } from 'kafkajs';
import { silentLogger } from '@urs/logging';
import { retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import type { MessageWork } from '../src/handle';
import { createKeyOrderedConsumption, type KeyOrderedOptions } from '../src/key-ordered';

const TOPIC = 'batches';

/** The consumer calls the key-ordered runner makes. */
const fakeConsumer = {
  pause: () => undefined,
  resume: () => undefined,
  seek: () => undefined,
} as unknown as Consumer;

/** A consumer that notes the runner's calls: "pause", "resume", "seek@offset". */
function notingConsumer(): { consumer: Consumer; calls: string[] } {
  const calls: string[] = [];
  const consumer = {
    pause: () => void calls.push('pause'),
    resume: () => void calls.push('resume'),
    seek: ({ offset }: { offset: string }) => void calls.push(`seek@${offset}`),
  } as unknown as Consumer;
  return { consumer, calls };
}

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
 * One fetched batch holding messages with these keys, at offsets `from`, `from + 1`, ... (a key of null
 * leaves its offset out, as a message no longer in the partition); what is committed through it goes to
 * `commits` as "partition@offset", and what is resolved to `resolved`.
 */
function fetchedBatch(
  keys: (string | null)[],
  commits: string[],
  partition = 0,
  from = 0,
  resolved: string[] = [],
): EachBatchPayload {
  const messages = keys.flatMap((key, i) =>
    key === null ? [] : [{ key: Buffer.from(key), offset: String(from + i) } as KafkaMessage],
  );
  return {
    batch: {
      topic: TOPIC,
      partition,
      messages,
      lastOffset: () => String(from + keys.length - 1),
    },
    resolveOffset: (offset: string) => void resolved.push(offset),
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

const tick = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20));

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
    maxDeferredPerPartition: 1_000,
    commitIntervalMs: 60_000,
    drainTimeoutMs: 1_000,
    buffered: new Registry({ processMetrics: false }).gauge('buffered', 'test'),
    deferred: new Registry({ processMetrics: false }).gauge('deferred', 'test'),
    labels: {},
    ...extra,
  });
  keyed.onGroupJoin(joined([0]));
  const resolved: string[] = [];
  return {
    keyed,
    commits,
    resolved,
    fetched: (keys: string[], partition = 0) => fetchedBatch(keys, commits, partition),
    /** A batch read from `from` on. */
    readFrom: (from: number, keys: (string | null)[]) => fetchedBatch(keys, commits, 0, from, resolved),
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

  it("should read past a full buffer to another key's message, and read its own deferred messages again once there is room, from the last committed offset", async () => {
    const handler = heldHandler();
    const { consumer, calls } = notingConsumer();
    const { keyed, commits, resolved, readFrom } = consumption(handler.settle, {
      consumer,
      maxBufferedPerPartition: 3,
      commitIntervalMs: 1,
    });
    // t0 and t1 run, t2 waits, t3 finds the buffer full: deferred. u4 takes t2's place (t2 deferred).
    await keyed.eachBatch(readFrom(0, ['t', 't', 't', 't', 'u']));
    expect(handler.started()).toEqual(['0', '1', '4']);
    expect(resolved).toEqual(['4']);
    expect(calls).toEqual([]);

    // t runs below its window and there is room: the partition is read again from where its reading
    // started (nothing committed yet), and goes on from t2.
    await handler.finish('0');
    expect(calls).toEqual(['seek@0']);
    await keyed.eachBatch(readFrom(0, ['t', 't', 't', 't', 'u']));
    expect(handler.started()).toEqual(['0', '1', '4', '2']);
    // Full again: t3 stays deferred, and the read goes on at the end.
    expect(resolved).toEqual(['4', '4']);
    await tick();
    expect(commits).toEqual(['0@1']);

    await handler.finish('1');
    expect(calls).toEqual(['seek@0', 'seek@1']);
    await keyed.eachBatch(readFrom(1, ['t', 't', 't', 'u']));
    expect(handler.started()).toEqual(['0', '1', '4', '2', '3']);
    for (const offset of ['2', '3', '4']) await handler.finish(offset);
    await keyed.drain();
    expect(commits.at(-1)).toBe('0@5');
  });

  it('should pause a partition once as many offsets are deferred as it keeps, and read it again once half of its buffer is left', async () => {
    const handler = heldHandler();
    const { consumer, calls } = notingConsumer();
    const { keyed, resolved, readFrom } = consumption(handler.settle, {
      consumer,
      maxBufferedPerPartition: 2,
      maxDeferredPerPartition: 1,
    });
    // t2 is deferred, u3 finds no room and no deferred place left: the reading stops before it.
    await keyed.eachBatch(readFrom(0, ['t', 't', 't', 'u']));
    expect(handler.started()).toEqual(['0', '1']);
    expect(resolved).toEqual(['2']);
    expect(calls).toEqual(['pause']);

    await handler.finish('0');
    expect(calls).toEqual(['pause', 'resume', 'seek@0']);
    await keyed.eachBatch(readFrom(0, ['t', 't', 't', 'u']));
    expect(handler.started()).toEqual(['0', '1', '2']);
    for (const offset of ['1', '2']) await handler.finish(offset);
    await keyed.eachBatch(readFrom(0, ['t', 't', 't', 'u']));
    expect(handler.started()).toEqual(['0', '1', '2', '3']);
    await handler.finish('3');
    await keyed.drain();
  });

  it('should finish a deferred message that a read back finds no longer in the partition, so the watermark passes it', async () => {
    const handler = heldHandler();
    const { keyed, commits, resolved, readFrom } = consumption(handler.settle, {
      maxBufferedPerPartition: 2,
    });
    // t2 finds the buffer full: read past, deferred.
    await keyed.eachBatch(readFrom(0, ['t', 't', 't']));
    expect(resolved).toEqual(['2']);
    for (const offset of ['0', '1']) await handler.finish(offset);
    // Read again from the start, t2 deleted by retention meanwhile.
    await keyed.eachBatch(readFrom(0, ['t', 't', null, 'u']));
    await handler.finish('3');
    await keyed.drain();
    expect(handler.started()).toEqual(['0', '1', '3']);
    expect(commits).toEqual(['0@4']);
  });
});
