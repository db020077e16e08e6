import { KafkaJSRequestTimeoutError, type Admin, type Kafka } from 'kafkajs';
import {
  createConsumerRunner,
  createPublisher,
  type ConsumerRunner,
  type ConsumerRunnerOptions,
  type InboundMessage,
  type Publisher,
} from '@urs/bus';
import type { TenantRecord } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { UrsError, retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import {
  createTestKafka,
  createUniqueTopics,
  deleteTopics,
  readDeadLetters,
  tenantRecord,
  uniqueId,
  waitFor,
} from '@urs/testkit';

/** A gate a handler waits on until the test opens it, or until the handler's signal aborts. */
function gate(): { wait: (signal?: AbortSignal) => Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return {
    open,
    wait: (signal) =>
      new Promise<void>((resolve, reject) => {
        void opened.then(resolve);
        signal?.addEventListener('abort', () => reject(new Error('aborted')), { once: true });
      }),
  };
}

/** An offset commit request as KafkaJS hands it to its broker connection. */
interface CommitRequest {
  groupId: string;
  topics: { topic: string; partitions: { partition: number; offset: unknown }[] }[];
}

// KafkaJS's broker connection, whose offsetCommit sends a commit request.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const Broker = require('kafkajs/src/broker') as {
  prototype: { offsetCommit(request: CommitRequest): Promise<unknown> };
};

/**
 * Holds the first offset commit of `groupId` as if its request were lost on the way: `sent` resolves with
 * its offsets ("partition@offset"), and once `timeOut` is called its sender sees the request time out.
 * Later commits go to the broker. `restore` puts the broker connection back as it was.
 */
function loseFirstCommit(groupId: string): {
  sent: Promise<string[]>;
  timeOut: () => void;
  restore: () => void;
} {
  const original = Broker.prototype.offsetCommit;
  const timedOut = gate();
  let sent!: (offsets: string[]) => void;
  let lost = false;
  Broker.prototype.offsetCommit = async function (this: unknown, request) {
    if (request.groupId !== groupId || lost) return original.call(this, request);
    lost = true;
    sent(
      request.topics.flatMap(({ partitions }) =>
        partitions.map(({ partition, offset }) => `${partition}@${String(offset)}`),
      ),
    );
    await timedOut.wait();
    throw new KafkaJSRequestTimeoutError('Request OffsetCommit timed out');
  };
  return {
    sent: new Promise((resolve) => (sent = resolve)),
    timeOut: timedOut.open,
    restore: () => (Broker.prototype.offsetCommit = original),
  };
}

/** Handler calls seen, as "tenantId@offset". */
type Seen = string[];
const seenAs = (message: InboundMessage<TenantRecord>): string =>
  `${message.value?.tenantId ?? 'null'}@${message.offset}`;

describe('createConsumerRunner with ordering by key', () => {
  let kafka: Kafka;
  let admin: Admin;
  let topics: string[];
  let publisher: Publisher;
  const runners: ConsumerRunner[] = [];

  beforeAll(() => {
    kafka = createTestKafka();
  });

  // Clients keep every topic they ever saw in their metadata requests, and a deleted topic makes them
  // fail: one publisher and one admin per test, closed before its topics are deleted.
  beforeEach(async () => {
    topics = await createUniqueTopics(kafka, [
      { prefix: 'keyed', numPartitions: 2 },
      { prefix: 'keyed-dlq' },
    ]);
    publisher = await createPublisher(kafka);
    admin = kafka.admin();
    await admin.connect();
  });

  afterEach(async () => {
    await Promise.all(runners.splice(0).map((runner) => runner.close()));
    await publisher.close();
    await admin.disconnect();
    await deleteTopics(kafka, topics);
  });

  function start(
    groupId: string,
    handler: (message: InboundMessage<TenantRecord>) => Promise<void>,
    extra: Partial<ConsumerRunnerOptions> = {},
  ): ConsumerRunner {
    const runner = createConsumerRunner({
      kafka,
      service: 'test',
      groupId,
      subscriptions: [{ topic: topics[0] as string, contract: 'urs/tenant-record', handler }],
      publisher,
      dlqTopic: topics[1] as string,
      logger: silentLogger,
      metrics: new Registry({ processMetrics: false }),
      retry: retryPolicy({ maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 20 }),
      ordering: 'key',
      commitIntervalMs: 100,
      sessionTimeoutMs: 10_000,
      ...extra,
    });
    runners.push(runner);
    return runner;
  }

  /** Writes [key, tenantId] pairs to one partition, in this order (offsets 0, 1, ...). */
  async function produce(partition: number, messages: [string, string][]): Promise<void> {
    const producer = kafka.producer();
    await producer.connect();
    try {
      await producer.send({
        topic: topics[0] as string,
        messages: messages.map(([key, tenantId]) => ({
          key,
          value: JSON.stringify(tenantRecord(tenantId)),
          partition,
        })),
      });
    } finally {
      await producer.disconnect();
    }
  }

  async function committed(groupId: string, partition = 0): Promise<string | undefined> {
    const [offsets] = await admin.fetchOffsets({ groupId, topics: [topics[0] as string] });
    return offsets?.partitions.find((p) => p.partition === partition)?.offset;
  }

  const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

  // Offsets: b0@0, a1@1, b1@2, a2@3, b2@4, b3@5, a3@6.
  const MIXED: [string, string][] = [
    ['B', 'b0'],
    ['A', 'a1'],
    ['B', 'b1'],
    ['A', 'a2'],
    ['B', 'b2'],
    ['B', 'b3'],
    ['A', 'a3'],
  ];

  it('should handle other keys of the partition while one key waits, and commit only up to the waiting message', async () => {
    const groupId = uniqueId('group');
    const blockA = gate();
    const seen: Seen = [];
    const metrics = new Registry({ processMetrics: false });
    await start(
      groupId,
      async (message) => {
        if (message.value?.tenantId === 'a1') await blockA.wait();
        seen.push(seenAs(message));
      },
      { metrics },
    ).start();
    await produce(0, MIXED);

    // B's messages, and a2 beside the waiting a1 (two messages of a key at once); a3 waits behind a1.
    await waitFor(() => seen.length >= 5, { timeoutMs: 30_000, description: "B's messages and a2 handled" });
    expect(seen.filter((s) => s.startsWith('b'))).toEqual(['b0@0', 'b1@2', 'b2@4', 'b3@5']);
    expect(seen).toContain('a2@3');
    await waitFor(async () => (await committed(groupId)) === '1', { timeoutMs: 10_000 });
    // Several commit intervals later the committed offset has not passed the waiting message, although
    // a2 behind it finished, and a3 still waits behind a1.
    await sleep(600);
    expect(await committed(groupId)).toBe('1');
    expect(seen).not.toContain('a3@6');
    expect(metrics.expose()).toContain(`urs_consumer_buffered_messages{group="${groupId}"} 2`);

    blockA.open();
    await waitFor(() => seen.length >= 7, { timeoutMs: 10_000 });
    expect(seen.slice(5)).toEqual(['a1@1', 'a3@6']);
    await waitFor(async () => (await committed(groupId)) === '7', { timeoutMs: 10_000 });
    expect(metrics.expose()).toContain(`urs_consumer_buffered_messages{group="${groupId}"} 0`);
  });

  it('should redeliver the waiting message and everything after it once the runner is closed before it finished', async () => {
    const groupId = uniqueId('group');
    const blockA = gate();
    const first: Seen = [];
    let aborted = false;
    const runner = start(
      groupId,
      async (message) => {
        if (message.value?.tenantId === 'a1') {
          try {
            await blockA.wait(message.signal);
          } catch (error) {
            aborted = message.signal?.aborted ?? false;
            throw error;
          }
        }
        first.push(seenAs(message));
      },
      { drainTimeoutMs: 300 },
    );
    await runner.start();
    await produce(0, MIXED);
    await waitFor(() => first.length >= 5, { timeoutMs: 30_000 });
    await waitFor(async () => (await committed(groupId)) === '1', { timeoutMs: 10_000 });

    await runner.close();
    expect(aborted).toBe(true);
    expect(first.sort()).toEqual(['a2@3', 'b0@0', 'b1@2', 'b2@4', 'b3@5']);
    expect(await committed(groupId)).toBe('1');

    // a2 finished, but after the unfinished a1: it comes again with everything after a1.
    const second: Seen = [];
    await start(groupId, async (message) => void second.push(seenAs(message))).start();
    await waitFor(() => second.length >= 6, { timeoutMs: 30_000 });
    expect(second.filter((s) => s.startsWith('a'))).toEqual(['a1@1', 'a2@3', 'a3@6']);
    expect(second.filter((s) => s.startsWith('b'))).toEqual(['b1@2', 'b2@4', 'b3@5']);
    await waitFor(async () => (await committed(groupId)) === '7', { timeoutMs: 10_000 });
  });

  it('should retry and dead-letter per message without holding up the other keys', async () => {
    const [topic, dlq] = topics as [string, string];
    const groupId = uniqueId('group');
    let attempts = 0;
    const handled: string[] = [];
    await start(groupId, async (message) => {
      const id = message.value?.tenantId ?? '';
      if (id === 'flaky' && ++attempts < 3) throw new UrsError('REDIS_DOWN', 'not yet', { canRetry: true });
      if (id === 'poison') throw new UrsError('PROFILE_INVALID', 'weights must total 100');
      handled.push(id);
    }).start();
    await produce(0, [
      ['x', 'flaky'],
      ['y', 'other'],
      ['x', 'poison'],
      ['x', 'after'],
    ]);
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic, messages: [{ key: 'y', value: '{"not": "closed"', partition: 0 }] });
    await producer.disconnect();

    await waitFor(() => handled.length >= 3, { timeoutMs: 30_000 });
    expect(handled.filter((id) => id !== 'other')).toEqual(['flaky', 'after']);
    expect(handled).toContain('other');
    expect(attempts).toBe(3);
    const letters = await readDeadLetters(kafka, dlq, 2);
    expect(letters.map((letter) => [letter.key, letter.error.code, letter.offset]).sort()).toEqual([
      ['x', 'PROFILE_INVALID', '2'],
      ['y', 'MESSAGE_NOT_JSON', '4'],
    ]);
    await waitFor(async () => (await committed(groupId)) === '5', { timeoutMs: 10_000 });
  });

  it("should handle another key's message behind more waiting messages of one key than the buffer holds, once the partition stayed full readPastAfterMs", async () => {
    const groupId = uniqueId('group');
    const blockA = gate();
    const seen: Seen = [];
    await start(
      groupId,
      async (message) => {
        if (message.key === 'A') await blockA.wait();
        seen.push(seenAs(message));
      },
      { maxBufferedPerPartition: 4, readPastAfterMs: 200 },
    ).start();
    // Ten messages of A, twice what the buffer holds, then B's: B must not wait for A beyond the delay.
    await produce(0, [
      ...Array.from({ length: 10 }, (_, i): [string, string] => ['A', `a${i}`]),
      ['B', 'b1'],
      ['B', 'b2'],
    ]);
    try {
      await waitFor(() => seen.length >= 2, { timeoutMs: 15_000, description: "B's messages handled" });
      expect(seen).toEqual(['b1@10', 'b2@11']);
      // B's finished, but A's first message is not: nothing is committed past it.
      await sleep(300);
      expect(Number(await committed(groupId))).toBeLessThanOrEqual(0);
    } finally {
      blockA.open();
    }
    await waitFor(() => seen.length >= 12, { timeoutMs: 15_000, description: "A's messages handled" });
    // A's in offset order, none twice: those read past while the buffer was full were read again.
    expect(seen.filter((s) => s.startsWith('a'))).toEqual(Array.from({ length: 10 }, (_, i) => `a${i}@${i}`));
    await waitFor(async () => (await committed(groupId)) === '12', { timeoutMs: 10_000 });
  });

  it('should read a key streaming through a full buffer for less than readPastAfterMs once while its messages progress, deferring none', async () => {
    const groupId = uniqueId('group');
    const metrics = new Registry({ processMetrics: false });
    // The runner takes this gauge by its name: every count of deferred messages it sets is noted.
    const deferred = metrics.gauge('urs_consumer_deferred_messages', 'test');
    const deferredSeen: number[] = [];
    const set = deferred.set.bind(deferred);
    deferred.set = (value, labels) => {
      deferredSeen.push(value);
      set(value, labels);
    };
    const seen: Seen = [];
    // Thirty messages of A waiting in the partition before the runner starts: a fetch brings more than the
    // buffer of 6 holds, so the partition fills again and again while each message takes a moment.
    await produce(
      0,
      Array.from({ length: 30 }, (_, i): [string, string] => ['A', `a${i}`]),
    );
    await start(
      groupId,
      async (message) => {
        seen.push(seenAs(message));
        await sleep(5);
      },
      // The stream takes ~2 s, its fetches waiting for the broker: well within the wait.
      { maxBufferedPerPartition: 6, readPastAfterMs: 10_000, metrics },
    ).start();
    await waitFor(async () => (await committed(groupId)) === '30', {
      timeoutMs: 20_000,
      description: "A's messages handled and committed",
    });
    expect(seen).toEqual(Array.from({ length: 30 }, (_, i) => `a${i}@${i}`));
    expect(deferredSeen.filter((count) => count > 0)).toEqual([]);
  });

  it("should handle another key's message behind a key streaming through a full buffer before the stream ends, once the key held the buffer readPastAfterMs", async () => {
    const groupId = uniqueId('group');
    const seen: Seen = [];
    // A hundred messages of A, then B's, waiting in the partition: the buffer of 6 is half empty and refilled
    // with A's messages every few tens of ms, far more often than the 200 ms after which it is read past.
    await produce(0, [
      ...Array.from({ length: 100 }, (_, i): [string, string] => ['A', `a${i}`]),
      ['B', 'b1'],
    ]);
    await start(
      groupId,
      async (message) => {
        seen.push(seenAs(message));
        if (message.key === 'A') await sleep(20);
      },
      { maxBufferedPerPartition: 6, readPastAfterMs: 200 },
    ).start();
    await waitFor(async () => (await committed(groupId)) === '101', {
      timeoutMs: 30_000,
      description: 'every message handled and committed',
    });
    // B's message was handled while A's stream went on: before the second half of it.
    expect(seen.indexOf('b1@100')).toBeGreaterThanOrEqual(0);
    expect(seen.indexOf('b1@100')).toBeLessThan(seen.indexOf('a50@50'));
    // A's in offset order, none twice: those read past were read again.
    expect(seen.filter((s) => s.startsWith('a'))).toEqual(
      Array.from({ length: 100 }, (_, i) => `a${i}@${i}`),
    );
  });

  it('should abort the work of a partition that moves to another member and leave its commit to the new owner', async () => {
    const groupId = uniqueId('group');
    const blocks = [gate(), gate()];
    const abortedPartitions: number[] = [];
    const firstCalls: string[] = [];
    await start(groupId, async (message) => {
      firstCalls.push(seenAs(message));
      try {
        await blocks[message.partition]?.wait(message.signal);
      } catch (error) {
        if (message.signal?.aborted) abortedPartitions.push(message.partition);
        throw error;
      }
    }).start();
    await produce(0, [['A', 'a1']]);
    await produce(1, [['C', 'c1']]);
    await sleep(1_000);

    const second: InboundMessage<TenantRecord>[] = [];
    await start(groupId, async (message) => void second.push(message)).start();
    // Two members, two partitions: the second member takes one of them over.
    await waitFor(() => abortedPartitions.length === 1 && second.length === 1, {
      timeoutMs: 40_000,
      description: 'one partition moved',
    });
    const moved = abortedPartitions[0] as number;
    expect(second[0]?.partition).toBe(moved);
    await waitFor(async () => (await committed(groupId, moved)) === '1', { timeoutMs: 10_000 });
    // The partition that stayed is still waiting in the first member, uncommitted.
    const stayed = 1 - moved;
    expect(await committed(groupId, stayed)).not.toBe('1');
    blocks[stayed]?.open();
    await waitFor(async () => (await committed(groupId, stayed)) === '1', { timeoutMs: 10_000 });
    // The rebalance made KafkaJS fetch the kept partition again from its committed offset; the message
    // already taken in was recognised, not handled a second time.
    expect(firstCalls.sort()).toEqual(['a1@0', 'c1@0']);
  });

  it("should not commit a partition that moved to another member over its new owner's offset when a commit in flight across the rebalance is tried again", async () => {
    const groupId = uniqueId('group');
    const lost = loseFirstCommit(groupId);
    try {
      const hold = gate();
      const first: Seen = [];
      await start(groupId, async (message) => {
        first.push(seenAs(message));
        await hold.wait();
      }).start();
      // Three messages of different keys on each partition, finished at once: one commit of both at 3.
      for (const partition of [0, 1]) {
        await produce(partition, [
          ['A', 'a1'],
          ['B', 'b1'],
          ['C', 'c1'],
        ]);
      }
      await waitFor(() => first.length === 6, { timeoutMs: 30_000, description: 'six messages started' });
      hold.open();
      expect((await lost.sent).sort()).toEqual(['0@3', '1@3']);

      // While that commit is on its way, three more messages per partition, and a second member.
      for (const partition of [0, 1]) {
        await produce(partition, [
          ['A', 'a2'],
          ['B', 'b2'],
          ['C', 'c2'],
        ]);
      }
      await waitFor(() => first.length === 12, { timeoutMs: 30_000, description: 'twelve messages handled' });
      const second: InboundMessage<TenantRecord>[] = [];
      await start(groupId, async (message) => void second.push(message)).start();
      await waitFor(() => second.length === 6, { timeoutMs: 40_000, description: 'one partition moved' });
      const moved = second[0]?.partition as number;
      expect(second.every((message) => message.partition === moved)).toBe(true);
      await waitFor(async () => (await committed(groupId, moved)) === '6', { timeoutMs: 10_000 });

      // The first member's commit times out after the rebalance; the first member goes on committing the
      // partition it kept, and the moved one keeps the offset its new owner committed.
      lost.timeOut();
      const stayed = 1 - moved;
      await waitFor(async () => (await committed(groupId, stayed)) === '6', { timeoutMs: 10_000 });
      await sleep(500);
      expect(await committed(groupId, moved)).toBe('6');
    } finally {
      lost.restore();
    }
  });
});
