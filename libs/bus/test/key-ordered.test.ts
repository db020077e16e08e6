import type { Consumer, ConsumerGroupJoinEvent, EachBatchPayload, KafkaMessage, Offsets } from 'kafkajs';
import { Registry } from '@urs/telemetry';
import type { MessageWork } from '../src/handle';
import { createKeyOrderedConsumption, type KeyOrderedOptions } from '../src/key-ordered';
import { TOPIC, joinedAs, keyOrderedOptions } from './key-ordered-support';

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
const joined = (partitions: number[]): ConsumerGroupJoinEvent['payload'] => joinedAs('member-1', partitions);

/**
 * One fetched batch holding messages with these keys, at offsets `from`, `from + 1`, ... (a key of null
 * leaves its offset out, as a message no longer in the partition); what is committed through it goes to
 * `commits` as "partition@offset", and what is resolved to `resolved`. The partition ends after it, unless
 * `highWatermark` says where.
 */
function fetchedBatch(
  keys: (string | null)[],
  commits: string[],
  partition = 0,
  from = 0,
  resolved: string[] = [],
  highWatermark = from + keys.length,
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
      highWatermark: String(highWatermark),
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

/**
 * One partition holding messages of `keys` at offsets 0, 1, ..., fetched as KafkaJS fetches it: while the
 * consumer has not paused it, up to `perFetch` messages from where the last batch resolved or the last seek
 * moved it. Counts each offset's fetches and notes where each fetch started, and the consumer's calls. Offsets
 * from the last message's up to `highWatermark` hold what no batch hands over (a transaction's marker).
 */
function fetchedPartition(keys: string[], perFetch: number, highWatermark = keys.length) {
  const calls: string[] = [];
  const fetched = keys.map(() => 0);
  const fetchedFrom: number[] = [];
  let paused = false;
  let position = 0;
  const consumer = {
    pause: () => {
      paused = true;
      calls.push('pause');
    },
    resume: () => {
      paused = false;
      calls.push('resume');
    },
    seek: ({ offset }: { offset: string }) => {
      position = Number(offset);
      calls.push(`seek@${offset}`);
    },
  } as unknown as Consumer;
  return {
    consumer,
    calls,
    fetched,
    fetchedFrom,
    /** The batch the next fetch brings, or undefined when the partition is paused or read to its end. */
    fetch(): EachBatchPayload | undefined {
      if (paused || position >= keys.length) return undefined;
      const from = position;
      const slice = keys.slice(from, from + perFetch);
      fetchedFrom.push(from);
      slice.forEach((_, i) => (fetched[from + i] = (fetched[from + i] ?? 0) + 1));
      return {
        ...fetchedBatch(slice, [], 0, from, [], highWatermark),
        resolveOffset: (offset: string) => void (position = Number(offset) + 1),
      } as EachBatchPayload;
    },
    /** Hands `keyed` the batches of up to `fetches` fetches, as KafkaJS fetches on: none once `fetch` brings none. */
    async deliverTo(
      keyed: { eachBatch(batch: EachBatchPayload): Promise<void> },
      fetches = 100,
    ): Promise<void> {
      for (let fetch = 0; fetch < fetches; fetch++) {
        const batch = this.fetch();
        if (!batch) return;
        await keyed.eachBatch(batch);
      }
    },
  };
}

/** Finishes the oldest message `handler` started that is not in `finished` (and that `of` takes), if any. */
async function finishOldest(
  handler: ReturnType<typeof heldHandler>,
  finished: Set<string>,
  of: (offset: string) => boolean = () => true,
): Promise<void> {
  const oldest = handler.started().find((offset) => !finished.has(offset) && of(offset));
  if (oldest === undefined) return;
  finished.add(oldest);
  await handler.finish(oldest);
}

/** A key-ordered consumption of a member assigned partition 0; `fetched` hands it a batch of `partition`. */
function consumption(settle: KeyOrderedOptions['settle'], extra: Partial<KeyOrderedOptions> = {}) {
  const commits: string[] = [];
  // A full partition of these tests is read past only when a test says so.
  const keyed = createKeyOrderedConsumption(keyOrderedOptions(settle, extra));
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

/**
 * A partition of `keys` fetched three messages at a time (see `fetchedPartition`; its end at `highWatermark`),
 * consumed with a buffer of 4 read past after 100 ms, its messages held until finished (`heldHandler`).
 */
function readPastConsumption(keys: string[], highWatermark = keys.length) {
  const partition = fetchedPartition(keys, 3, highWatermark);
  const handler = heldHandler();
  const { keyed } = consumption(handler.settle, {
    consumer: partition.consumer,
    maxBufferedPerPartition: 4,
    readPastAfterMs: 100,
  });
  return { partition, handler, keyed };
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

  it('should pause a full partition again when a restarted consumer rejoins with its member id, as KafkaJS forgot the pause', async () => {
    const handler = heldHandler();
    const { consumer, calls } = notingConsumer();
    const { keyed, readFrom } = consumption(handler.settle, {
      consumer,
      maxBufferedPerPartition: 3,
      readPastAfterMs: 60_000,
    });
    keyed.onGroupJoin(joined([0]));
    await keyed.eachBatch(readFrom(0, ['t', 't', 't', 't']));
    expect(calls).toEqual(['pause']);
    // The consumer crashed and was started again: a new KafkaJS membership (nothing paused), the same member.
    keyed.onGroupJoin(joined([0]));
    expect(calls).toEqual(['pause', 'pause']);
    await handler.finish('0');
    await handler.finish('1');
    await handler.finish('2');
    await keyed.drain();
  });

  it("should pause a full partition, read it past its full buffer to another key's message once it stayed full readPastAfterMs, and read its own deferred messages again once there is room, from the last committed offset", async () => {
    const handler = heldHandler();
    const { consumer, calls } = notingConsumer();
    const { keyed, commits, resolved, readFrom } = consumption(handler.settle, {
      consumer,
      maxBufferedPerPartition: 3,
      readPastAfterMs: 1,
      commitIntervalMs: 1,
    });
    // t0 and t1 run, t2 waits, t3 finds the buffer full: the read stops at it, and the partition pauses.
    await keyed.eachBatch(readFrom(0, ['t', 't', 't', 't', 'u']));
    expect(handler.started()).toEqual(['0', '1']);
    expect(resolved).toEqual(['2']);
    expect(calls).toEqual(['pause']);

    // Still full once the delay passed: read past. t3 is deferred, u4 takes t2's place (t2 deferred).
    await tick();
    expect(calls).toEqual(['pause', 'resume']);
    await keyed.eachBatch(readFrom(3, ['t', 'u']));
    expect(handler.started()).toEqual(['0', '1', '4']);
    expect(resolved).toEqual(['2', '4']);

    // t runs below its window and there is room: the partition is read again from where its reading
    // started (nothing committed yet), and goes on from t2.
    await handler.finish('0');
    expect(calls).toEqual(['pause', 'resume', 'seek@0']);
    await keyed.eachBatch(readFrom(0, ['t', 't', 't', 't', 'u']));
    expect(handler.started()).toEqual(['0', '1', '4', '2']);
    // Full again: t3 stays deferred, and the read goes on at the end.
    expect(resolved).toEqual(['2', '4', '4']);
    await tick();
    expect(commits).toEqual(['0@1']);

    await handler.finish('1');
    expect(calls).toEqual(['pause', 'resume', 'seek@0', 'seek@1']);
    await keyed.eachBatch(readFrom(1, ['t', 't', 't', 'u']));
    expect(handler.started()).toEqual(['0', '1', '4', '2', '3']);
    for (const offset of ['2', '3', '4']) await handler.finish(offset);
    await keyed.drain();
    expect(commits.at(-1)).toBe('0@5');
  });

  it('should pause a partition read past its full buffer once as many offsets are deferred as it keeps, and read it again once half of its buffer is left, pausing it again when full', async () => {
    const handler = heldHandler();
    const { consumer, calls } = notingConsumer();
    const { keyed, resolved, readFrom } = consumption(handler.settle, {
      consumer,
      maxBufferedPerPartition: 2,
      maxDeferredPerPartition: 1,
      readPastAfterMs: 1,
    });
    await keyed.eachBatch(readFrom(0, ['t', 't', 't', 'u']));
    await tick();
    expect(calls).toEqual(['pause', 'resume']);
    // Read past: t2 is deferred, u3 finds no room and no deferred place left: the reading stops before it.
    await keyed.eachBatch(readFrom(2, ['t', 'u']));
    expect(handler.started()).toEqual(['0', '1']);
    expect(resolved).toEqual(['1', '2']);
    expect(calls).toEqual(['pause', 'resume', 'pause']);

    // Half empty: read again from the start, no longer past a full buffer. t2 fills it: u3 waits, paused.
    await handler.finish('0');
    expect(calls).toEqual(['pause', 'resume', 'pause', 'seek@0', 'resume']);
    await keyed.eachBatch(readFrom(0, ['t', 't', 't', 'u']));
    expect(handler.started()).toEqual(['0', '1', '2']);
    expect(resolved).toEqual(['1', '2', '2']);
    expect(calls.at(-1)).toBe('pause');
    for (const offset of ['1', '2']) await handler.finish(offset);
    expect(calls.at(-1)).toBe('resume');
    await keyed.eachBatch(readFrom(3, ['u']));
    expect(handler.started()).toEqual(['0', '1', '2', '3']);
    await handler.finish('3');
    await keyed.drain();
    expect(calls.filter((call) => call.startsWith('seek'))).toEqual(['seek@0']);
  });

  it.each([1, 3])(
    'should read a key streaming through a full buffer once while its messages finish steadily, %i message(s) a fetch: paused until half of it is left, nothing deferred, nothing read back',
    async (perFetch) => {
      const keys = Array.from({ length: 40 }, () => 't');
      const partition = fetchedPartition(keys, perFetch);
      const handler = heldHandler();
      const deferred = new Registry({ processMetrics: false }).gauge('deferred', 'test');
      const deferredSeen: number[] = [];
      const set = deferred.set.bind(deferred);
      deferred.set = (value, labels) => {
        deferredSeen.push(value);
        set(value, labels);
      };
      const { keyed } = consumption(handler.settle, {
        consumer: partition.consumer,
        maxBufferedPerPartition: 4,
        deferred,
      });
      const finished = new Set<string>();
      // Each round: two fetches, if KafkaJS would make them, then the oldest message running finishes.
      for (let round = 0; finished.size < keys.length && round < 1_000; round++) {
        await partition.deliverTo(keyed, 2);
        await finishOldest(handler, finished);
      }
      const calls = [...partition.calls];
      await keyed.drain();

      expect(calls.filter((call) => call.startsWith('seek'))).toEqual([]);
      expect(deferredSeen.filter((value) => value > 0)).toEqual([]);
      expect(handler.started()).toEqual(keys.map((_, offset) => String(offset)));
      // Each fetch started where the last one's reading stopped: nothing was read back.
      expect(partition.fetchedFrom).toEqual([...partition.fetchedFrom].sort((a, b) => a - b));
      expect(new Set(partition.fetchedFrom).size).toBe(partition.fetchedFrom.length);
      // The buffer did fill: the partition paused, and resumed once half of it was left.
      expect(calls.filter((call) => call === 'pause').length).toBeGreaterThan(3);
      expect(calls.filter((call) => call === 'resume').length).toBeGreaterThan(3);
      // One message a fetch, none is fetched twice (with more, a batch that fills the buffer is fetched again
      // from where its reading stopped, as a paused partition always was).
      if (perFetch === 1) expect(partition.fetched).toEqual(keys.map(() => 1));
    },
  );

  it("should read past a key streaming through a full buffer to another key's message behind its stream once the key held the buffer readPastAfterMs, though it was half empty and refilled meanwhile", async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'] });
    try {
      // Forty messages of t, then one of u: t's stream is ten buffers long.
      const keys = [...Array.from({ length: 40 }, () => 't'), 'u'];
      const { partition, handler, keyed } = readPastConsumption(keys);
      const finished = new Set<string>();
      let pausesSinceU: number | undefined;
      partition.consumer.pause = (
        (pause) =>
        (...args: Parameters<Consumer['pause']>) => {
          if (pausesSinceU !== undefined) pausesSinceU++;
          pause(...args);
        }
      )(partition.consumer.pause.bind(partition.consumer));
      // Each round: two fetches, if KafkaJS would make them, then the oldest message running finishes and
      // 10 ms pass: the buffer is half empty every other round, long before the 100 ms.
      for (let round = 0; finished.size < keys.length && round < 1_000; round++) {
        await partition.deliverTo(keyed, 2);
        await finishOldest(handler, finished);
        jest.advanceTimersByTime(10);
        if (pausesSinceU === undefined && handler.started().includes('40')) pausesSinceU = 0;
      }
      const calls = [...partition.calls];
      await keyed.drain();

      const started = handler.started();
      // u's message started while t's stream went on: before the second half of it.
      expect(started.indexOf('40')).toBeGreaterThanOrEqual(0);
      expect(started.indexOf('40')).toBeLessThan(started.indexOf('20'));
      // t's messages in offset order, each handed to the handler once.
      expect(started.filter((offset) => offset !== '40')).toEqual(keys.slice(0, 40).map((_, i) => String(i)));
      // Read to its end (u's message), the partition's next fetch went back to t's oldest message read past,
      // by the offset resolved, without a seek; no longer read past, it paused again when full.
      const end = partition.fetchedFrom.findIndex((from) => from + 3 > 40);
      expect(partition.fetchedFrom[end + 1]).toBeLessThan(40 - 4);
      expect(calls.filter((call) => call.startsWith('seek'))).toEqual([]);
      expect(pausesSinceU).toBeGreaterThan(3);
    } finally {
      jest.useRealTimers();
    }
  });

  it('should read a partition past a key whose messages wait once, to its end, and fetch it no more while the buffer stays full', async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'] });
    try {
      // t's messages all wait (none finishes), twelve of them behind its window, then one of u.
      const keys = [...Array.from({ length: 14 }, () => 't'), 'u'];
      const { partition, handler, keyed } = readPastConsumption(keys);
      await partition.deliverTo(keyed);
      jest.advanceTimersByTime(100);
      await partition.deliverTo(keyed);
      // Read past t to its end: u's message started.
      expect(handler.started()).toEqual(['0', '1', '14']);
      const fetches = partition.fetchedFrom.length;

      for (let wait = 0; wait < 10; wait++) {
        jest.advanceTimersByTime(100);
        await partition.deliverTo(keyed);
      }
      expect(partition.fetchedFrom.length).toBe(fetches);
      expect(partition.calls.filter((call) => call.startsWith('seek'))).toEqual([]);
    } finally {
      jest.useRealTimers();
    }
  });

  // Seven: t still holds the buffer when it was last full before w's messages fill it; eight: t and w share it.
  it.each([7, 8])(
    'should read past a key whose messages wait once, to its end, after another key streamed %i messages through the partition',
    async (streamed) => {
      jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'] });
      try {
        // Messages of t, which finish steadily (it streams), then fourteen of w, which all wait, then one of u.
        const keys = [
          ...Array.from({ length: streamed }, () => 't'),
          ...Array.from({ length: 14 }, () => 'w'),
          'u',
        ];
        const { partition, handler, keyed } = readPastConsumption(keys);
        const finished = new Set<string>();
        for (let round = 0; finished.size < streamed && round < 1_000; round++) {
          await partition.deliverTo(keyed);
          await finishOldest(handler, finished, (offset) => Number(offset) < streamed);
        }
        expect(finished.size).toBe(streamed);
        await partition.deliverTo(keyed);
        jest.advanceTimersByTime(100);
        await partition.deliverTo(keyed);
        // Read past w to its end: u's message started.
        expect(handler.started()).toContain(String(keys.length - 1));
        const fetches = partition.fetchedFrom.length;

        // w's messages read back would fill the buffer again at once: the fetch stays at the end.
        for (let wait = 0; wait < 10; wait++) {
          jest.advanceTimersByTime(100);
          await partition.deliverTo(keyed);
        }
        expect(partition.fetchedFrom.slice(fetches)).toEqual([]);
      } finally {
        jest.useRealTimers();
      }
    },
  );

  it("should move the fetch back to a key's deferred messages, read past it to where no batch comes, once readPastAfterMs passes without a batch: the partition ends in a transaction's marker", async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'] });
    try {
      // Forty messages of t, then one of u, then a marker at offset 41 that no batch hands over.
      const keys = [...Array.from({ length: 40 }, () => 't'), 'u'];
      const { partition, handler, keyed } = readPastConsumption(keys, keys.length + 1);
      const finished = new Set<string>();
      for (let round = 0; finished.size < keys.length && round < 1_000; round++) {
        await partition.deliverTo(keyed, 2);
        await finishOldest(handler, finished);
        jest.advanceTimersByTime(10);
      }
      await keyed.drain();

      // Every message handled, t's in offset order: its deferred ones read again by a seek once no batch came.
      expect(finished.size).toBe(keys.length);
      expect(handler.started().filter((offset) => offset !== '40')).toEqual(
        keys.slice(0, 40).map((_, i) => String(i)),
      );
      expect(partition.calls.filter((call) => call.startsWith('seek')).length).toBeGreaterThan(0);
    } finally {
      jest.useRealTimers();
    }
  });

  it('should move the fetch back by a seek when a partition read past a key that held it, paused at its deferred bound, is half empty', async () => {
    const handler = heldHandler();
    const { consumer, calls } = notingConsumer();
    const { keyed, resolved, readFrom } = consumption(handler.settle, {
      consumer,
      maxBufferedPerPartition: 4,
      maxDeferredPerPartition: 1,
      readPastAfterMs: 1,
    });
    // t holds the whole buffer; t4 finds it full: paused, then read past.
    await keyed.eachBatch(readFrom(0, ['t', 't', 't', 't', 't', 'u', 'u']));
    await tick();
    expect(calls).toEqual(['pause', 'resume']);
    // t4 deferred; u5 finds no room and no deferred place left: paused at the bound, before the end.
    await keyed.eachBatch(readFrom(4, ['t', 'u', 'u']));
    expect(resolved).toEqual(['3', '4']);
    expect(calls).toEqual(['pause', 'resume', 'pause']);

    // Half empty: read again from the start by a seek, before the partition resumes.
    await handler.finish('0');
    await handler.finish('1');
    expect(calls).toEqual(['pause', 'resume', 'pause', 'seek@0', 'resume']);
    await keyed.eachBatch(readFrom(0, ['t', 't', 't', 't', 't', 'u', 'u']));
    expect(handler.started()).toEqual(['0', '1', '2', '3', '5', '6']);
    for (const offset of ['2', '3', '5', '6']) await handler.finish(offset);
    await keyed.drain();
  });

  it('should stop waiting to read a full partition past its buffer once it is revoked or closed', async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'] });
    try {
      const stopped: string[] = [];
      const { consumer, calls } = notingConsumer();
      const { keyed, fetched } = consumption(
        // Returns once the runner stops it, without finishing.
        (work) =>
          new Promise<boolean>((resolve) =>
            work.stopSignal?.addEventListener('abort', () => {
              stopped.push(`${work.partition}@${work.message.offset}`);
              resolve(false);
            }),
          ),
        { consumer, maxBufferedPerPartition: 2, readPastAfterMs: 1_000 },
      );
      keyed.onGroupJoin(joined([0, 1]));
      await keyed.eachBatch(fetched(['t', 't', 't'], 0));
      await keyed.eachBatch(fetched(['u', 'u', 'u'], 1));
      expect(calls).toEqual(['pause', 'pause']);
      expect(jest.getTimerCount()).toBe(2);

      keyed.onGroupJoin(joined([0]));
      expect(jest.getTimerCount()).toBe(1);
      await keyed.drain();
      expect(jest.getTimerCount()).toBe(0);
      jest.advanceTimersByTime(5_000);
      // Paused twice; at the rejoin the partition kept is paused again (a consumer KafkaJS restarted has no
      // pause of before) and the one revoked resumed (KafkaJS keeps a pause past the assignment); paused all
      // on close.
      expect(calls).toEqual(['pause', 'pause', 'pause', 'resume', 'pause']);
      expect(stopped.sort()).toEqual(['0@0', '0@1', '1@0', '1@1']);
    } finally {
      jest.useRealTimers();
    }
  });

  it('should finish a deferred message that a read back finds no longer in the partition, so the watermark passes it', async () => {
    const handler = heldHandler();
    const { keyed, commits, resolved, readFrom } = consumption(handler.settle, {
      maxBufferedPerPartition: 2,
      readPastAfterMs: 1,
    });
    // t2 finds the buffer full; once read past, it is deferred.
    await keyed.eachBatch(readFrom(0, ['t', 't', 't']));
    await tick();
    await keyed.eachBatch(readFrom(2, ['t']));
    expect(resolved).toEqual(['1', '2']);
    for (const offset of ['0', '1']) await handler.finish(offset);
    // Read again from the start, t2 deleted by retention meanwhile.
    await keyed.eachBatch(readFrom(0, ['t', 't', null, 'u']));
    await handler.finish('3');
    await keyed.drain();
    expect(handler.started()).toEqual(['0', '1', '3']);
    expect(commits).toEqual(['0@4']);
  });
});
