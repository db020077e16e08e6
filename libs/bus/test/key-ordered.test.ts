import type { Consumer, EachBatchPayload, KafkaMessage } from 'kafkajs';
import { silentLogger } from '@urs/logging';
import { retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import type { MessageWork } from '../src/handle';
import { createKeyOrderedConsumption, type KeyOrderedOptions } from '../src/key-ordered';

const TOPIC = 'batches';

/** The consumer calls the key-ordered runner makes, with the offsets it committed. */
function fakeConsumer(): { consumer: Consumer; commits: string[] } {
  const commits: string[] = [];
  const consumer = {
    pause: () => undefined,
    resume: () => undefined,
    commitOffsets: async (offsets: { offset: string }[]) => {
      for (const { offset } of offsets) commits.push(offset);
    },
  } as unknown as Consumer;
  return { consumer, commits };
}

/** One fetched batch of partition 0 holding messages with these keys, at offsets 0, 1, ... */
function fetched(keys: string[]): EachBatchPayload {
  const messages = keys.map(
    (key, offset) => ({ key: Buffer.from(key), offset: String(offset) }) as KafkaMessage,
  );
  return {
    batch: {
      topic: TOPIC,
      partition: 0,
      messages,
      lastOffset: () => String(keys.length - 1),
    },
    resolveOffset: () => undefined,
    isRunning: () => true,
    isStale: () => false,
    heartbeat: async () => undefined,
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

function consumption(settle: KeyOrderedOptions['settle'], extra: Partial<KeyOrderedOptions> = {}) {
  const { consumer, commits } = fakeConsumer();
  const keyed = createKeyOrderedConsumption({
    consumer,
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
  return { keyed, commits };
}

describe('createKeyOrderedConsumption', () => {
  it("should run a key's next message while the one before it is still handled, two at a time by default", async () => {
    const handler = heldHandler();
    const { keyed } = consumption(handler.settle);
    await keyed.eachBatch(fetched(['t', 't', 't', 'u']));
    expect(handler.started()).toEqual(['0', '1', '3']);

    await handler.finish('0');
    expect(handler.started()).toEqual(['0', '1', '3', '2']);
    for (const offset of ['1', '2', '3']) await handler.finish(offset);
    await keyed.drain();
  });

  it('should start a message only once the message of its key two places before it finished', async () => {
    const handler = heldHandler();
    const { keyed } = consumption(handler.settle);
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
    const { keyed, commits } = consumption(handler.settle, { drainTimeoutMs: 50 });
    await keyed.eachBatch(fetched(['t', 't']));
    await handler.finish('1');
    // Closing commits the watermark: offset 0 is unfinished, so nothing past it is committed.
    await keyed.drain();
    expect(commits).toEqual(['0']);
  });

  it('should commit past both once the older message finishes too', async () => {
    const handler = heldHandler();
    const { keyed, commits } = consumption(handler.settle);
    await keyed.eachBatch(fetched(['t', 't']));
    await handler.finish('1');
    await handler.finish('0');
    await keyed.drain();
    expect(commits).toEqual(['2']);
  });

  it('should keep a key to one message at a time when told inFlightPerKey 1', async () => {
    const handler = heldHandler();
    const { keyed } = consumption(handler.settle, { inFlightPerKey: 1 });
    await keyed.eachBatch(fetched(['t', 't']));
    expect(handler.started()).toEqual(['0']);
    await handler.finish('0');
    expect(handler.started()).toEqual(['0', '1']);
    await handler.finish('1');
    await keyed.drain();
  });
});
