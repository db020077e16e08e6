import { getEventListeners } from 'node:events';
import type { EachBatchPayload, KafkaMessage } from 'kafkajs';
import { KafkaJSProtocolError } from 'kafkajs';
import { silentLogger } from '@urs/logging';
import { UrsError, retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import { waitFor } from '@urs/testkit';
import { createMessageProcessor, type MessageHandler } from '../src/handle';
import { createPartitionOrderedConsumption } from '../src/partition-ordered';
import type { Publisher } from '../src/publisher';
import { heldMessages, messageWork } from './work';

/** A batch of `offsets` whose heartbeat fails as with the broker away; what it resolves goes to `resolved`. */
function batchWithBrokerAway(offsets: string[], resolved: string[]): EachBatchPayload {
  return {
    batch: {
      topic: 'batches',
      partition: 0,
      messages: offsets.map((offset) => ({ offset }) as KafkaMessage),
    },
    isRunning: () => true,
    isStale: () => false,
    resolveOffset: (offset: string) => void resolved.push(offset),
    commitOffsetsIfNecessary: async () => undefined,
    heartbeat: async () => {
      throw new Error('Connection error: connect ECONNREFUSED 127.0.0.1:9092');
    },
  } as unknown as EachBatchPayload;
}

describe('createPartitionOrderedConsumption', () => {
  it("should keep a message's retries going when the heartbeat before a retry fails, the broker away", async () => {
    const resolved: string[] = [];
    let attempts = 0;
    const consumption = createPartitionOrderedConsumption({
      // A message held on a Kafka fault: tried three times, a heartbeat before each retry.
      settle: async (work) => {
        for (attempts = 1; attempts < 3; attempts++) await work.beforeRetry();
        return true;
      },
      commit: false,
      drainTimeoutMs: 1_000,
      log: silentLogger,
    });
    // The heartbeat after the message (KafkaJS's, between messages) may fail the batch; the retries' may not.
    await consumption.eachBatch(batchWithBrokerAway(['0'], resolved)).catch(() => undefined);
    expect(attempts).toBe(3);
    expect(resolved).toEqual(['0']);
  });
});

/** The group's answer to a heartbeat while it rebalances, as KafkaJS rejects with it. */
const rebalancing = (): Error =>
  new KafkaJSProtocolError(
    Object.assign(new Error('The group is rebalancing, so a rejoin is needed'), {
      type: 'REBALANCE_IN_PROGRESS',
      code: 27,
      retriable: false,
    }),
  );

/**
 * `handler` of topic `tenants` under partition ordering, handed a batch of one message (offset 7) whose
 * heartbeats reject as during a rebalance: what the batch resolved and how the message ended are returned.
 */
async function batchDuringRebalance(handler: MessageHandler<unknown>) {
  const metrics = new Registry({ processMetrics: false });
  const handled = metrics.counter('handled_total', 'handled');
  const settle = createMessageProcessor({
    service: 'test',
    subscriptions: new Map([
      ['tenants', { topic: 'tenants', contract: 'urs/tenant-record', tombstones: true, handler }],
    ]),
    publisher: { send: async () => undefined } as unknown as Publisher,
    dlqTopic: 'dlq',
    log: silentLogger,
    retry: retryPolicy({ maxAttempts: 3, initialDelayMs: 5, maxDelayMs: 5 }),
    held: heldMessages(),
    handled,
    seconds: metrics.histogram('handler_seconds', 'seconds'),
  });
  const consumption = createPartitionOrderedConsumption({
    settle,
    commit: false,
    drainTimeoutMs: 1_000,
    log: silentLogger,
  });
  const resolved: string[] = [];
  let heartbeats = 0;
  const ended = consumption.eachBatch({
    batch: {
      topic: 'tenants',
      partition: 0,
      messages: [messageWork({ topic: 'tenants', offset: '7' }).message],
    },
    isRunning: () => true,
    isStale: () => false,
    resolveOffset: (offset: string) => void resolved.push(offset),
    commitOffsetsIfNecessary: async () => undefined,
    heartbeat: async () => {
      heartbeats++;
      throw rebalancing();
    },
  } as unknown as EachBatchPayload);
  return { ended, resolved, handled, heartbeats: () => heartbeats };
}

describe('createPartitionOrderedConsumption during a rebalance', () => {
  it('should give a held message up unfinished once the heartbeat before its retry meets a rebalance', async () => {
    let calls = 0;
    const run = await batchDuringRebalance(async () => {
      calls++;
      throw new UrsError('REDIS_UNAVAILABLE', 'Redis is unreachable', { infrastructure: true });
    });
    await expect(run.ended).resolves.toBeUndefined();
    expect(calls).toBe(1);
    expect(run.heartbeats()).toBe(1);
    expect(run.resolved).toEqual([]);
  });

  it("should resolve the handler's heartbeat and abort its signal, the message given up, not failed", async () => {
    let heartbeat: Promise<void> | undefined;
    let aborted: boolean | undefined;
    const run = await batchDuringRebalance(async (message) => {
      heartbeat = message.heartbeat?.();
      await heartbeat;
      aborted = message.signal?.aborted;
      if (aborted) throw new Error('stopped: the partition may have moved');
    });
    await expect(run.ended).resolves.toBeUndefined();
    await expect(heartbeat).resolves.toBeUndefined();
    expect(aborted).toBe(true);
    expect(run.resolved).toEqual([]);
    expect(run.handled.get({ topic: 'tenants', outcome: 'retried' })).toBe(0);
  });
});

/** A batch of `offsets` of partition 0 of `batches` whose heartbeats answer; what it resolves goes to `resolved`. */
function batchOf(offsets: string[], resolved: string[] = []): EachBatchPayload {
  return {
    batch: {
      topic: 'batches',
      partition: 0,
      messages: offsets.map((offset) => ({ offset }) as KafkaMessage),
    },
    isRunning: () => true,
    isStale: () => false,
    resolveOffset: (offset: string) => void resolved.push(offset),
    commitOffsetsIfNecessary: async () => undefined,
    heartbeat: async () => undefined,
  } as unknown as EachBatchPayload;
}

/** Resolves once `signal` is aborted. */
const abortOf = (signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));

// The handlers' signals follow the runner's close, which lives as long as the runner, and the batch's move to
// another member. Made once per batch, not per message, and let go of when the batch ends: Node keeps every
// AbortSignal.any made from a long-lived signal (nodejs/node#55351).
describe("createPartitionOrderedConsumption's handler signals", () => {
  it('should give every message of a batch the same signals, and let go of them when the batch ends', async () => {
    const given: { batch: number; signal: AbortSignal; stopSignal: AbortSignal }[] = [];
    let batch = 0;
    const consumption = createPartitionOrderedConsumption({
      settle: async (work) => {
        if (!work.signal) throw new Error('a message without a signal');
        given.push({ batch, signal: work.signal, stopSignal: work.stopSignal });
        return true;
      },
      commit: false,
      drainTimeoutMs: 1_000,
      log: silentLogger,
    });
    const resolved: string[] = [];
    batch = 1;
    await consumption.eachBatch(batchOf(['0', '1', '2'], resolved));
    batch = 2;
    await consumption.eachBatch(batchOf(['3', '4'], resolved));
    await consumption.drain();

    expect(resolved).toEqual(['0', '1', '2', '3', '4']);
    const signalsOf = (n: number, which: 'signal' | 'stopSignal'): Set<AbortSignal> =>
      new Set(given.filter((one) => one.batch === n).map((one) => one[which]));
    for (const which of ['signal', 'stopSignal'] as const) {
      expect([signalsOf(1, which).size, signalsOf(2, which).size]).toEqual([1, 1]);
      expect([...signalsOf(1, which)][0]).not.toBe([...signalsOf(2, which)][0]);
    }
    // Close came after both batches ended: it no longer reaches their signals.
    expect(given.map((one) => [one.signal.aborted, one.stopSignal.aborted])).toEqual(
      Array(5).fill([false, false]),
    );
  });

  it("should stop the batch in flight on close, then abort its handler's signal once the drain time passed", async () => {
    let stoppedFirst: boolean | undefined;
    let handling = (): void => undefined;
    const started = new Promise<void>((resolve) => (handling = resolve));
    const consumption = createPartitionOrderedConsumption({
      // A handler that ignores the stop and returns only once its signal aborts.
      settle: async (work) => {
        if (!work.signal) throw new Error('a message without a signal');
        handling();
        await abortOf(work.signal);
        stoppedFirst = work.stopSignal.aborted;
        return false;
      },
      commit: false,
      drainTimeoutMs: 10,
      log: silentLogger,
    });
    const resolved: string[] = [];
    const ended = consumption.eachBatch(batchOf(['0', '1'], resolved));
    await started;
    await consumption.drain();
    await ended;
    expect(stoppedFirst).toBe(true);
    expect(resolved).toEqual([]);
  });
});

/**
 * Runs `run`, which may ask `mostOnOne`: the most abort listeners any AbortSignal given one since `run` began
 * holds now (the runner's long-lived signals among them).
 */
async function abortListenersDuring(run: (mostOnOne: () => number) => Promise<void>): Promise<void> {
  const original = EventTarget.prototype.addEventListener;
  const signals = new Set<AbortSignal>();
  const spy = jest.spyOn(EventTarget.prototype, 'addEventListener').mockImplementation(function (
    this: EventTarget,
    ...args: Parameters<EventTarget['addEventListener']>
  ) {
    if (this instanceof AbortSignal && args[0] === 'abort') signals.add(this);
    original.apply(this, args);
  });
  try {
    await run(() => Math.max(0, ...[...signals].map((signal) => getEventListeners(signal, 'abort').length)));
  } finally {
    spy.mockRestore();
  }
}

describe("createPartitionOrderedConsumption's close signals under concurrent batches", () => {
  it('should add a constant number of listeners to its close signals whatever the number of batches in flight, and abort each on close', async () => {
    const BATCHES = 20;
    await abortListenersDuring(async (mostOnOne) => {
      const signals: AbortSignal[] = [];
      const stopSignals: AbortSignal[] = [];
      const consumption = createPartitionOrderedConsumption({
        // A handler that ignores the stop and returns only once its signal aborts.
        settle: async (work) => {
          if (!work.signal) throw new Error('a message without a signal');
          signals.push(work.signal);
          stopSignals.push(work.stopSignal);
          await new Promise<void>((resolve) => work.signal?.addEventListener('abort', () => resolve()));
          return false;
        },
        commit: false,
        drainTimeoutMs: 10,
        log: silentLogger,
      });
      const ended = Array.from({ length: BATCHES }, (_, partition) =>
        consumption.eachBatch({
          ...batchOf([String(partition)]),
          batch: { ...batchOf(['0']).batch, partition },
        }),
      );
      await waitFor(() => signals.length === BATCHES);
      // The batches' own signals carry one listener each (their handler's); the runner-long ones, a few at most.
      expect(mostOnOne()).toBeLessThanOrEqual(2);
      await consumption.drain();
      await Promise.all(ended);
      expect(signals.filter((signal) => signal.aborted)).toHaveLength(BATCHES);
      expect(stopSignals.filter((signal) => signal.aborted)).toHaveLength(BATCHES);
    });
  });
});
