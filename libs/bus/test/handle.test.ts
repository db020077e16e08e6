import { ReplyError } from 'ioredis';
import { KafkaJSConnectionError, KafkaJSNumberOfRetriesExceeded } from 'kafkajs';
import { UrsError, retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import { capturingLogger, topicNotAuthorised, type LogLine } from '@urs/testkit';
import type { TenantRecord } from '@urs/contracts';
import { createMessageProcessor, type InboundMessage } from '../src/handle';
import { heldMessages, messageWork } from './work';
import type { Publisher } from '../src/publisher';

const TOPIC = 'tenants';

/** The vuln-fetcher's failure when the service's stop aborts its calls. */
const stoppingError = (): UrsError =>
  new UrsError('STOPPING', 'the batch was interrupted (stop or rebalance); it will be handled again', {
    canRetry: true,
  });

/** What a handler's Redis write rejects with when Redis reached its maxmemory (policy noeviction). */
const redisOom = (): Error => new ReplyError('OOM command not allowed when used memory > maxmemory.');

/** What a handler's produce rejects with when the broker is away, after KafkaJS's own retries. */
const kafkaAway = (): Error =>
  new KafkaJSNumberOfRetriesExceeded(
    new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:9092'),
    { retryCount: 8, retryTime: 5_000 },
  );

/**
 * A processor of TOPIC (tombstones accepted) whose handler is `handler`, a publisher that notes the topics
 * it is sent to, and the runner's stop: `stop()` makes the work's `shouldStop` true and aborts its
 * `stopSignal`, as closing a runner does.
 */
function processor(
  handler: (message: InboundMessage<TenantRecord>) => Promise<void>,
  maxAttempts: number,
  catchingUp?: (error: unknown) => boolean,
) {
  const sent: string[] = [];
  const lines: LogLine[] = [];
  const publisher = {
    send: async (topic: string) => void sent.push(topic),
  } as unknown as Publisher;
  const metrics = new Registry({ processMetrics: false });
  const held = heldMessages(capturingLogger(lines), metrics);
  const settle = createMessageProcessor({
    service: 'test',
    subscriptions: new Map([
      [TOPIC, { topic: TOPIC, contract: 'urs/tenant-record', tombstones: true, handler, catchingUp }],
    ]),
    publisher,
    dlqTopic: 'dlq',
    log: capturingLogger(lines),
    retry: retryPolicy({ maxAttempts, initialDelayMs: 1, maxDelayMs: 1 }),
    held,
    handled: metrics.counter('handled_total', 'handled'),
    seconds: metrics.histogram('handler_seconds', 'seconds'),
  });
  const runner = new AbortController();
  const work = messageWork({ topic: TOPIC, offset: '7', key: 'tenant', stop: runner });
  return { settle: () => settle(work), stop: () => runner.abort(), sent, lines, held, metrics };
}

describe('createMessageProcessor', () => {
  it.each([1, 20])(
    'should leave a message unfinished, neither retried nor dead-lettered, when its handler fails because the runner is stopping (%i attempts)',
    async (maxAttempts) => {
      let calls = 0;
      const run = processor(async () => {
        calls++;
        // The runner is closed, and the service's stop aborts the handler's calls.
        run.stop();
        throw stoppingError();
      }, maxAttempts);
      await expect(run.settle()).resolves.toBe(false);
      expect(calls).toBe(1);
      expect(run.sent).toEqual([]);
      expect(run.lines.map((line) => line.message)).toEqual([]);
    },
  );

  it('should not dead-letter a message whose handler fails for good while the runner is stopping', async () => {
    const run = processor(async () => {
      run.stop();
      throw new UrsError('ANSWER_INVALID', 'not retryable', { canRetry: false });
    }, 20);
    await expect(run.settle()).resolves.toBe(false);
    expect(run.sent).toEqual([]);
  });

  it('should retry a failing handler and dead-letter the message when the runner is not stopping', async () => {
    let calls = 0;
    const run = processor(async () => {
      calls++;
      throw stoppingError();
    }, 3);
    await expect(run.settle()).resolves.toBe(true);
    expect(calls).toBe(3);
    expect(run.sent).toEqual(['dlq']);
    expect(run.lines.filter((line) => line.message === 'handler failed, retrying')).toHaveLength(2);
  });

  it('should tell the handler whether a failure of this attempt has its message handled again: not a retryable one on the last attempt, nor one dead-lettered at once', async () => {
    const retryable = (): UrsError => new UrsError('TENANT_BUSY', 'try again', { canRetry: true });
    const failures = [retryable, kafkaAway, topicNotAuthorised, () => new UrsError('BAD', 'for good')];
    const answers: (boolean | undefined)[][] = [];
    const run = processor(async (message) => {
      answers.push(failures.map((failure) => message.handledAgainAfter?.(failure())));
      throw retryable();
    }, 3);
    await expect(run.settle()).resolves.toBe(true);
    expect(answers).toEqual([
      [true, true, true, false],
      [true, true, true, false],
      // The last attempt: a retryable failure now has the message dead-lettered, not handled again.
      [false, true, true, false],
    ]);
    expect(run.sent).toEqual(['dlq']);
  });

  it.each([
    ['Redis answering OOM', redisOom],
    ['Kafka away', kafkaAway],
    // An error of ours wrapping it, saying nothing of retrying (a UrsError's default): still Redis's fault.
    [
      'Redis answering OOM, wrapped',
      () => new UrsError('STORE_STEP', 'could not store', { cause: redisOom() }),
    ],
  ])(
    'should hold a message whose handler fails on %s past maxAttempts, and handle it once the dependency is back, never dead-lettered',
    async (_name, fault) => {
      let calls = 0;
      const run = processor(async () => {
        calls++;
        if (calls <= 10) throw fault();
      }, 3);
      await expect(run.settle()).resolves.toBe(true);
      expect(calls).toBe(11);
      expect(run.sent).toEqual([]);
      expect(run.held.count).toBe(0);
      expect(run.metrics.expose()).toContain('held_messages 0');
      // One message held, once: not once per attempt.
      expect(run.metrics.expose()).toContain(`handled_total{outcome="held",topic="${TOPIC}"} 1\n`);
      // Once per outage: its start and its end, not a line per attempt.
      expect(run.lines.filter((line) => line.level !== 'debug').map((line) => line.message)).toEqual([
        'messages held: a dependency failed; retried until it is back, not dead-lettered',
        'no message held any more',
      ]);
      expect(run.lines[0]).toMatchObject({ tenantId: 'tenant', offset: '7', held: 1 });
    },
  );

  it("should count only the message's own failures against maxAttempts, and dead-letter it when they reach it", async () => {
    let calls = 0;
    const run = processor(async () => {
      calls++;
      if (calls <= 5) throw redisOom();
      throw new UrsError('TENANT_BUSY', 'the tenant is being written; try again', { canRetry: true });
    }, 3);
    await expect(run.settle()).resolves.toBe(true);
    expect(calls).toBe(8);
    expect(run.sent).toEqual(['dlq']);
    expect(run.held.count).toBe(0);
    expect(run.lines.filter((line) => line.message === 'handler failed, retrying')).toHaveLength(2);
  });

  it.each([
    ['as KafkaJS throws it', topicNotAuthorised],
    [
      'wrapped in an error of ours',
      () => new UrsError('SEND_STEP', 'could not send', { cause: topicNotAuthorised() }),
    ],
  ])(
    'should hold a message whose handler Kafka refuses for want of an ACL (%s) past maxAttempts, and handle it once the ACL is granted, never dead-lettered',
    async (_name, refusal) => {
      let calls = 0;
      const run = processor(async () => {
        calls++;
        if (calls <= 10) throw refusal();
      }, 3);
      await expect(run.settle()).resolves.toBe(true);
      expect(calls).toBe(11);
      expect(run.sent).toEqual([]);
      expect(run.held.count).toBe(0);
      expect(run.metrics.expose()).toContain(`handled_total{outcome="held",topic="${TOPIC}"} 1\n`);
      expect(run.lines.filter((line) => line.level !== 'debug').map((line) => line.message)).toEqual([
        'messages held: Kafka refused a request for want of an ACL; retried until it is granted, not dead-lettered',
        'no message held any more',
      ]);
      expect(run.lines[0]).toMatchObject({
        tenantId: 'tenant',
        offset: '7',
        held: 1,
        holdReason: 'not-authorized',
      });
    },
  );

  it("should hold a message whose handler waits for the service's start to catch up as catching-up, past maxAttempts, never dead-lettered", async () => {
    const notReadYet = (): UrsError =>
      new UrsError('NOT_READ_YET', 'not read yet', { canRetry: true, infrastructure: true });
    let calls = 0;
    const run = processor(
      async () => {
        calls++;
        if (calls <= 2) throw notReadYet();
        if (calls <= 4) throw redisOom();
      },
      3,
      (error) => error instanceof UrsError && error.code === 'NOT_READ_YET',
    );
    await expect(run.settle()).resolves.toBe(true);
    expect(calls).toBe(5);
    expect(run.sent).toEqual([]);
    expect(run.lines.filter((line) => line.level === 'warn').map((line) => line.holdReason)).toEqual([
      'catching-up',
      'dependency',
    ]);
  });

  it('should give a held message up, unfinished and not dead-lettered, when the runner stops', async () => {
    let calls = 0;
    const run = processor(async () => {
      calls++;
      if (calls === 6) run.stop();
      throw redisOom();
    }, 3);
    await expect(run.settle()).resolves.toBe(false);
    expect(calls).toBe(6);
    expect(run.sent).toEqual([]);
    expect(run.held.count).toBe(0);
  });
});
