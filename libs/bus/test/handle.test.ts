import { UrsError, retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import { capturingLogger, type LogLine } from '@urs/testkit';
import { createMessageProcessor } from '../src/handle';
import { messageWork } from './work';
import type { Publisher } from '../src/publisher';

const TOPIC = 'tenants';

/** The vuln-fetcher's failure when the service's stop aborts its calls. */
const stoppingError = (): UrsError =>
  new UrsError('STOPPING', 'the batch was interrupted (stop or rebalance); it will be handled again', {
    canRetry: true,
  });

/**
 * A processor of TOPIC (tombstones accepted) whose handler is `handler`, a publisher that notes the topics
 * it is sent to, and the runner's stop: `stop()` makes the work's `shouldStop` true and aborts its
 * `stopSignal`, as closing a runner does.
 */
function processor(handler: () => Promise<void>, maxAttempts: number) {
  const sent: string[] = [];
  const lines: LogLine[] = [];
  const publisher = {
    send: async (topic: string) => void sent.push(topic),
  } as unknown as Publisher;
  const metrics = new Registry({ processMetrics: false });
  const settle = createMessageProcessor({
    service: 'test',
    subscriptions: new Map([
      [TOPIC, { topic: TOPIC, contract: 'urs/tenant-record', tombstones: true, handler }],
    ]),
    publisher,
    dlqTopic: 'dlq',
    log: capturingLogger(lines),
    retry: retryPolicy({ maxAttempts, initialDelayMs: 1, maxDelayMs: 1 }),
    handled: metrics.counter('handled_total', 'handled'),
    seconds: metrics.histogram('handler_seconds', 'seconds'),
  });
  const runner = new AbortController();
  const work = messageWork({ topic: TOPIC, offset: '7', key: 'tenant', stop: runner });
  return { settle: () => settle(work), stop: () => runner.abort(), sent, lines };
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
});
