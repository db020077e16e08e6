import type { EachBatchPayload } from 'kafkajs';
import { KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError } from 'kafkajs';
import { UrsError, retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import { capturingLogger, waitFor, type LogLine } from '@urs/testkit';
import { createMessageProcessor, settleUntilDone } from '../src/handle';
import { createPartitionOrderedConsumption } from '../src/partition-ordered';
import type { Publisher } from '../src/publisher';
import { heldMessages, messageWork } from './work';

const TOPIC = 'tenants';
const MAX_ATTEMPTS = 3;

/** A broker's error answer, as KafkaJS's protocol layer hands it to KafkaJSProtocolError. */
const protocolError = (type: string, code: number, retriable: boolean, message: string): Error =>
  Object.assign(new Error(message), { type, code, retriable });

/** What a produce to the dead-letter topic rejects with while its partition's leader moves, after the retries. */
const leaderMoving = (): Error =>
  new KafkaJSNumberOfRetriesExceeded(
    new KafkaJSProtocolError(
      protocolError(
        'NOT_LEADER_FOR_PARTITION',
        6,
        true,
        'This server is not the leader for that topic-partition',
      ),
    ),
    { retryCount: 5, retryTime: 3_000 },
  );

/** What a produce rejects with when the broker refuses the record itself: sent again, it is refused again. */
const refusedForGood = (): Error =>
  new KafkaJSProtocolError(
    protocolError(
      'INVALID_RECORD',
      87,
      false,
      'This record has failed the validation on broker and hence will be rejected',
    ),
  );

/** What a produce rejects with when the client may not write to the topic (an ACL): only an operator mends it. */
const topicNotAuthorised = (): Error =>
  new KafkaJSProtocolError(
    protocolError(
      'TOPIC_AUTHORIZATION_FAILED',
      29,
      false,
      'Not authorized to access topics: [Topic authorization failed]',
    ),
  );

/** What a produce rejects with when the record is larger than the topic takes (max.message.bytes). */
const tooLarge = (): Error =>
  new KafkaJSProtocolError(
    protocolError(
      'MESSAGE_TOO_LARGE',
      10,
      false,
      'The request included a message larger than the max message size the server will accept',
    ),
  );

/**
 * A processor of TOPIC whose handler fails the message every time (its own fault, retryable), and a publisher
 * whose sends to the dead-letter topic fail with `failure()` `failures` times (succeeding when it gives no
 * error), then succeed. `events` tells the
 * order of what happened: each handler call, send attempt (with the messages held then), and written letter.
 */
function processor(
  failures: number,
  failure: () => Error | undefined = leaderMoving,
  deadLettering?: () => Promise<void>,
) {
  const events: string[] = [];
  const lines: LogLine[] = [];
  let handlerCalls = 0;
  let sendAttempts = 0;
  const heldAtSend: number[] = [];
  const written: unknown[] = [];
  const metrics = new Registry({ processMetrics: false });
  const held = heldMessages(capturingLogger(lines), metrics);
  const publisher = {
    send: async (topic: string, _contract: string, messages: unknown[]) => {
      sendAttempts++;
      heldAtSend.push(held.count);
      events.push(`send ${topic}`);
      const error = sendAttempts <= failures ? failure() : undefined;
      if (error) throw error;
      written.push(...messages);
    },
  } as unknown as Publisher;
  const retry = retryPolicy({ maxAttempts: MAX_ATTEMPTS, initialDelayMs: 5, maxDelayMs: 5 });
  const log = capturingLogger(lines);
  const settle = createMessageProcessor({
    service: 'test',
    subscriptions: new Map([
      [
        TOPIC,
        {
          topic: TOPIC,
          contract: 'urs/tenant-record',
          tombstones: true,
          ...(deadLettering ? { deadLettering } : {}),
          handler: async () => {
            handlerCalls++;
            events.push('handler');
            throw new UrsError('TENANT_BUSY', 'the tenant is being written; try again', { canRetry: true });
          },
        },
      ],
    ]),
    publisher,
    dlqTopic: 'dlq',
    log,
    retry,
    held,
    handled: metrics.counter('handled_total', 'handled'),
    seconds: metrics.histogram('handler_seconds', 'seconds'),
  });
  return {
    settle,
    retry,
    log,
    events,
    lines,
    held,
    metrics,
    written,
    heldAtSend,
    handlerCalls: () => handlerCalls,
    sendAttempts: () => sendAttempts,
  };
}

/**
 * `run`'s processor under partition ordering, handed a batch of one message (offset 7): its offsets resolved and
 * committed go to `run.events`; `heartbeat` is the batch's.
 */
function eachBatchOfOne(
  run: ReturnType<typeof processor>,
  heartbeat: () => Promise<void> = async () => undefined,
): Promise<void> {
  const consumption = createPartitionOrderedConsumption({
    settle: run.settle,
    commit: true,
    drainTimeoutMs: 1_000,
    log: run.log,
  });
  return consumption.eachBatch({
    batch: { topic: TOPIC, partition: 0, messages: [messageWork({ topic: TOPIC, offset: '7' }).message] },
    isRunning: () => true,
    isStale: () => false,
    resolveOffset: (offset: string) => void run.events.push(`resolve ${offset}`),
    commitOffsetsIfNecessary: async () => void run.events.push('commit'),
    heartbeat,
  } as unknown as EachBatchPayload);
}

describe('dead-lettering a message whose attempts are spent, while the dead-letter topic refuses the letter', () => {
  it('should hold the message and write its letter again in place, never running the handler again (ordering key)', async () => {
    const run = processor(3);
    const stop = new AbortController();
    const work = messageWork({ topic: TOPIC, offset: '7', key: 'tenant', stop });
    await expect(settleUntilDone(run.settle, work, { retry: run.retry, log: run.log })).resolves.toBe(true);
    expect(run.handlerCalls()).toBe(MAX_ATTEMPTS);
    expect(run.sendAttempts()).toBe(4);
    expect(run.written).toHaveLength(1);
    // Held from the first refusal on, as on any Kafka fault, and no longer once the letter is written.
    expect(run.heldAtSend).toEqual([0, 1, 1, 1]);
    expect(run.held.count).toBe(0);
    const metrics = run.metrics.expose();
    expect(metrics).toContain('held_messages 0');
    expect(metrics).toContain(`handled_total{outcome="held",topic="${TOPIC}"} 1`);
    expect(metrics).toContain(`handled_total{outcome="dead-lettered",topic="${TOPIC}"} 1`);
    // Told once per outage (its start and its end), not at error on each attempt.
    expect(run.lines.filter((line) => line.level === 'error')).toEqual([]);
    expect(run.lines.map((line) => line.message)).toContain(
      'messages held: a dependency failed; retried until it is back, not dead-lettered',
    );
  });

  it('should resolve and commit the offset once the letter is written, never running the handler again (ordering partition)', async () => {
    const run = processor(3);
    await expect(eachBatchOfOne(run)).resolves.toBeUndefined();
    expect(run.handlerCalls()).toBe(MAX_ATTEMPTS);
    expect(run.written).toHaveLength(1);
    expect(run.events).toEqual([
      ...Array<string>(MAX_ATTEMPTS).fill('handler'),
      ...Array<string>(4).fill('send dlq'),
      'resolve 7',
      'commit',
      'commit',
    ]);
  });

  it('should leave the message unsettled, its letter unwritten and the handler not run again, when the runner stops meanwhile', async () => {
    const run = processor(Infinity);
    const stop = new AbortController();
    const work = messageWork({ topic: TOPIC, offset: '7', key: 'tenant', stop });
    const settled = settleUntilDone(run.settle, work, { retry: run.retry, log: run.log });
    // Held once its attempts are spent and the letter is refused.
    await waitFor(() => run.held.count === 1);
    stop.abort();
    await expect(settled).resolves.toBe(false);
    expect(run.handlerCalls()).toBe(MAX_ATTEMPTS);
    expect(run.written).toEqual([]);
    expect(run.held.count).toBe(0);
  });

  it.each([
    ['topic authorisation', topicNotAuthorised],
    ['record validation', refusedForGood],
  ])(
    'should hold the message while the broker refuses its letter (%s), writing only the letter again, never the handler (ordering key)',
    async (_name, refusal) => {
      const run = processor(3, refusal);
      const work = messageWork({ topic: TOPIC, offset: '7', key: 'tenant' });
      await expect(settleUntilDone(run.settle, work, { retry: run.retry, log: run.log })).resolves.toBe(true);
      expect(run.handlerCalls()).toBe(MAX_ATTEMPTS);
      expect(run.sendAttempts()).toBe(4);
      expect(run.written).toHaveLength(1);
      expect(run.heldAtSend).toEqual([0, 1, 1, 1]);
      expect(run.held.count).toBe(0);
      const metrics = run.metrics.expose();
      expect(metrics).toContain(`handled_total{outcome="dead-letter-refused",topic="${TOPIC}"} 1`);
      expect(metrics).toContain(`handled_total{outcome="dead-lettered",topic="${TOPIC}"} 1`);
      // Told once per hold, at error: waiting alone does not mend it.
      const errors = run.lines.filter((line) => line.level === 'error');
      expect(errors.map((line) => line.message)).toEqual([
        'dead letter refused by Kafka, holding the message until it takes it',
      ]);
      expect(errors[0]).toMatchObject({ offset: '7', tenantId: 'tenant', code: 'RETRIES_EXHAUSTED' });
    },
  );

  it('should warn that messages are held because Kafka refused their dead letter, not because a dependency failed', async () => {
    const run = processor(3, topicNotAuthorised);
    const work = messageWork({ topic: TOPIC, offset: '7', key: 'tenant' });
    await expect(settleUntilDone(run.settle, work, { retry: run.retry, log: run.log })).resolves.toBe(true);
    const warnings = run.lines.filter(
      (line) => line.level === 'warn' && line.message.startsWith('messages held'),
    );
    expect(warnings.map((line) => line.message)).toEqual([
      'messages held: Kafka refused their dead letter; written again until it takes it, their handler not run again',
    ]);
    expect(warnings[0]).toMatchObject({ offset: '7', held: 1, holdReason: 'dead-letter-refused' });
  });

  it('should warn that messages are held because a dependency failed when the dead-letter topic is away, then say Kafka refused the letter when it does', async () => {
    let sends = 0;
    const run = processor(3, () => (++sends === 1 ? leaderMoving() : tooLarge()));
    const work = messageWork({ topic: TOPIC, offset: '7', key: 'tenant' });
    await expect(settleUntilDone(run.settle, work, { retry: run.retry, log: run.log })).resolves.toBe(true);
    const warnings = run.lines.filter(
      (line) => line.level === 'warn' && line.message.startsWith('messages held'),
    );
    expect(warnings.map((line) => line.holdReason)).toEqual(['dependency', 'dead-letter-refused']);
    expect(warnings[0]?.message).toBe(
      'messages held: a dependency failed; retried until it is back, not dead-lettered',
    );
  });

  it('should resolve and commit the offset once a letter the broker refused as too large is written, never crashing (ordering partition)', async () => {
    const run = processor(2, tooLarge);
    await expect(eachBatchOfOne(run)).resolves.toBeUndefined();
    expect(run.handlerCalls()).toBe(MAX_ATTEMPTS);
    expect(run.written).toHaveLength(1);
    expect(run.events).toEqual([
      ...Array<string>(MAX_ATTEMPTS).fill('handler'),
      ...Array<string>(3).fill('send dlq'),
      'resolve 7',
      'commit',
      'commit',
    ]);
  });

  it('should leave the message unsettled and no longer held, its letter unwritten, when the runner stops while the broker refuses it', async () => {
    const run = processor(Infinity, topicNotAuthorised);
    const stop = new AbortController();
    const work = messageWork({ topic: TOPIC, offset: '7', key: 'tenant', stop });
    const settled = settleUntilDone(run.settle, work, { retry: run.retry, log: run.log });
    await waitFor(() => run.held.count === 1);
    stop.abort();
    await expect(settled).resolves.toBe(false);
    expect(run.handlerCalls()).toBe(MAX_ATTEMPTS);
    expect(run.written).toEqual([]);
    expect(run.held.count).toBe(0);
  });

  it('should heartbeat while what a written letter stands for waits on Redis (ordering partition)', async () => {
    let refusals = 2;
    const redisDown = async (): Promise<void> => {
      if (refusals-- > 0)
        throw new UrsError('REDIS_UNAVAILABLE', 'Redis is unreachable', { infrastructure: true });
    };
    const run = processor(0, leaderMoving, redisDown);
    await expect(eachBatchOfOne(run, async () => void run.events.push('heartbeat'))).resolves.toBeUndefined();
    expect(run.written).toHaveLength(1);
    expect(refusals).toBe(-1);
    // Before each of the two tries again: the group does not take the partition away meanwhile.
    const afterLetter = run.events.slice(run.events.indexOf('send dlq'), run.events.indexOf('resolve 7') + 1);
    expect(afterLetter).toEqual(['send dlq', 'heartbeat', 'heartbeat', 'resolve 7']);
  });
});

// A message given up while its letter is refused (a consumer restarted after a crash, its partition revoked and
// assigned back) is delivered again to the same processor: its attempts were spent, its handler calls (the
// vuln-fetcher's to Defender) are not made again.
describe('a message met again after its attempts were spent, its dead letter unwritten', () => {
  /** `run`'s message at offset 7, settled until held with its letter refused, then given up by a stop. */
  async function givenUpWhileRefused(run: ReturnType<typeof processor>): Promise<void> {
    const stop = new AbortController();
    const work = messageWork({ topic: TOPIC, offset: '7', key: 'tenant', stop });
    const settled = settleUntilDone(run.settle, work, { retry: run.retry, log: run.log });
    await waitFor(() => run.held.count === 1);
    stop.abort();
    await expect(settled).resolves.toBe(false);
  }

  it('should write its letter without running its handler again, and say so', async () => {
    const refusal = { on: true };
    const run = processor(Infinity, () => (refusal.on ? topicNotAuthorised() : undefined));
    await givenUpWhileRefused(run);
    expect(run.handlerCalls()).toBe(MAX_ATTEMPTS);
    refusal.on = false;

    const again = messageWork({ topic: TOPIC, offset: '7', key: 'tenant' });
    await expect(settleUntilDone(run.settle, again, { retry: run.retry, log: run.log })).resolves.toBe(true);
    expect(run.handlerCalls()).toBe(MAX_ATTEMPTS);
    expect(run.written).toHaveLength(1);
    expect(run.written[0]).toMatchObject({ value: { offset: '7', error: { code: 'RETRIES_EXHAUSTED' } } });
    const metAgain = run.lines.filter((line) => line.message.startsWith('message met again'));
    expect(metAgain).toHaveLength(1);
    expect(metAgain[0]).toMatchObject({ level: 'info', offset: '7', code: 'RETRIES_EXHAUSTED' });

    // Settled: delivered once more (a replay), it is handled as any message.
    const replay = messageWork({ topic: TOPIC, offset: '7', key: 'tenant' });
    await settleUntilDone(run.settle, replay, { retry: run.retry, log: run.log });
    expect(run.handlerCalls()).toBe(2 * MAX_ATTEMPTS);
  });

  it('should run the handler of another record at the same offset (its topic made again)', async () => {
    const refusal = { on: true };
    const run = processor(Infinity, () => (refusal.on ? topicNotAuthorised() : undefined));
    await givenUpWhileRefused(run);
    refusal.on = false;
    const other = messageWork({ topic: TOPIC, offset: '7', key: 'tenant' });
    other.message.timestamp = '1';
    await expect(settleUntilDone(run.settle, other, { retry: run.retry, log: run.log })).resolves.toBe(true);
    expect(run.handlerCalls()).toBe(2 * MAX_ATTEMPTS);
  });
});
