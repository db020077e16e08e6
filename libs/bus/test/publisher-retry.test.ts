import type { Kafka, ProducerConfig } from 'kafkajs';
import { createPublisher } from '@urs/bus';

/** What KafkaJS rejects a send with when its one try found the broker away. */
const away = (): Error =>
  Object.assign(new Error('Connection error: connect ECONNREFUSED 127.0.0.1:9092'), {
    name: 'KafkaJSNumberOfRetriesExceeded',
    retriable: false,
    retryCount: 0,
    cause: Object.assign(new Error('connect ECONNREFUSED'), {
      name: 'KafkaJSConnectionError',
      retriable: true,
    }),
  });

/** A KafkaJS whose producer's sends fail (broker away) as long as `failing`, counting what is asked of it. */
function flakyKafka() {
  const state = { failing: true, sends: 0, connects: 0, disconnects: 0, config: undefined as unknown };
  const kafka = {
    producer: (config: ProducerConfig) => {
      state.config = config;
      return {
        connect: async () => void state.connects++,
        disconnect: async () => void state.disconnects++,
        send: async () => {
          state.sends++;
          if (state.failing) throw away();
        },
      };
    },
  } as unknown as Kafka;
  return { kafka, state };
}

describe('createPublisher with retryForMs', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('should try a send that fails on what may heal again until it succeeds, KafkaJS retrying nothing', async () => {
    const { kafka, state } = flakyKafka();
    const publisher = await createPublisher(kafka, { retryForMs: 14_000 });
    expect(state.config).toMatchObject({ retry: { retries: 0 } });
    const sending = publisher.sendRaw('urs.scores', [{ key: 'a', value: '{}' }]);
    await jest.advanceTimersByTimeAsync(1_000);
    expect(state.sends).toBeGreaterThan(1);
    state.failing = false;
    await jest.advanceTimersByTimeAsync(5_000);
    await expect(sending).resolves.toBeUndefined();
  });

  it('should give a send up once retryForMs has passed', async () => {
    const { kafka, state } = flakyKafka();
    const publisher = await createPublisher(kafka, { retryForMs: 14_000 });
    const sending = publisher.sendRaw('urs.scores', [{ key: 'a', value: '{}' }]);
    sending.catch(() => undefined);
    await jest.advanceTimersByTimeAsync(14_000);
    await expect(sending).rejects.toMatchObject({ name: 'KafkaJSNumberOfRetriesExceeded' });
    const sends = state.sends;
    await jest.advanceTimersByTimeAsync(30_000);
    expect(state.sends).toBe(sends);
  });

  it('should give a send of several requests up once retryForMs has passed since the send began, not since each request', async () => {
    const began = Date.now();
    // The first request (key a) goes through from 10 s on; the others fail throughout.
    const kafka = {
      producer: () => ({
        connect: async () => undefined,
        disconnect: async () => undefined,
        send: async ({ messages }: { messages: { key: string }[] }) => {
          if (messages[0]!.key !== 'a' || Date.now() - began < 10_000) throw away();
        },
      }),
    } as unknown as Kafka;
    const publisher = await createPublisher(kafka, { retryForMs: 14_000 });
    // Three values of 3 MiB: three requests of at most MAX_SEND_BYTES (4 MiB).
    const value = 'x'.repeat(3 * 1024 * 1024);
    let settled = false;
    const sending = publisher.sendRaw('urs.scores', [
      { key: 'a', value },
      { key: 'b', value },
      { key: 'c', value },
    ]);
    sending.catch(() => undefined).finally(() => (settled = true));
    // Tried until 14 s from the start: the second request had what was left of them, not 14 s of its own.
    await jest.advanceTimersByTimeAsync(20_000);
    expect(settled).toBe(true);
    await expect(sending).rejects.toMatchObject({ name: 'KafkaJSNumberOfRetriesExceeded' });
  });

  it('should end the tries of a send at once on close, trying nothing more', async () => {
    const { kafka, state } = flakyKafka();
    const publisher = await createPublisher(kafka, { retryForMs: 14_000 });
    const sending = publisher.sendRaw('urs.scores', [{ key: 'a', value: '{}' }]);
    sending.catch(() => undefined);
    await jest.advanceTimersByTimeAsync(0);
    expect(state.sends).toBe(1);
    await publisher.close();
    // Rejected without any time passing: the wait for the next try ended with the close.
    await expect(sending).rejects.toMatchObject({ name: 'KafkaJSNumberOfRetriesExceeded' });
    await jest.advanceTimersByTimeAsync(30_000);
    expect(state.sends).toBe(1);
    expect(state.disconnects).toBeGreaterThanOrEqual(1);
  });

  it('should disconnect a producer whose connect failed', async () => {
    const { kafka, state } = flakyKafka();
    const refusing = {
      producer: (config: ProducerConfig) => ({
        ...(kafka.producer(config) as object),
        connect: async () => Promise.reject(away()),
      }),
    } as unknown as Kafka;
    await expect(createPublisher(refusing, { retryForMs: 14_000 })).rejects.toMatchObject({
      name: 'KafkaJSNumberOfRetriesExceeded',
    });
    expect(state.disconnects).toBe(1);
  });
});

describe('createPublisher with a batch the broker answers as corrupt', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  /** KafkaJS's answer when the broker cannot read a batch (its checksum, say): retriable to KafkaJS. */
  const corrupt = (): Error =>
    Object.assign(
      new Error('This message has failed its CRC checksum, exceeds the valid size, or is otherwise corrupt'),
      {
        name: 'KafkaJSProtocolError',
        type: 'CORRUPT_MESSAGE',
        code: 2,
        retriable: true,
      },
    );

  function corruptingKafka(times: number) {
    const state = { sends: 0 };
    const kafka = {
      producer: () => ({
        connect: async () => undefined,
        disconnect: async () => undefined,
        send: async () => {
          state.sends++;
          if (state.sends <= times) throw corrupt();
        },
      }),
    } as unknown as Kafka;
    return { kafka, state };
  }

  it('should send it again, as a checksum broken in transit heals when sent again', async () => {
    const { kafka, state } = corruptingKafka(2);
    const publisher = await createPublisher(kafka, { retryForMs: 14_000 });
    const sending = publisher.sendRaw('urs.scores', [{ key: 'a', value: '{}' }]);
    await jest.advanceTimersByTimeAsync(5_000);
    await expect(sending).resolves.toBeUndefined();
    expect(state.sends).toBe(3);
  });

  it('should give it up as refused for good, not retryable, once refused at every resend', async () => {
    const { kafka } = corruptingKafka(Infinity);
    const publisher = await createPublisher(kafka, { retryForMs: 14_000 });
    const sending = publisher.sendRaw('urs.scores', [{ key: 'a', value: '{}' }]);
    sending.catch(() => undefined);
    await jest.advanceTimersByTimeAsync(14_000);
    await expect(sending).rejects.toMatchObject({
      code: 'RECORD_REFUSED',
      canRetry: false,
      details: { refusal: 'CORRUPT_MESSAGE' },
    });
  });
});
