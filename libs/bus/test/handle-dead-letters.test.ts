import { UrsError, retryPolicy } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import { capturingLogger, type LogLine } from '@urs/testkit';
import type { DeadLetterClaim, DeadLetterLedger } from '../src/dead-letter-once';
import { createMessageProcessor, type DeadLetteringMessage } from '../src/handle';
import type { Publisher } from '../src/publisher';
import { heldMessages, messageWork } from './work';

const TOPIC = 'tenants';

/** A Redis fault, as the store's commands fail while Redis is away. */
const redisAway = (): UrsError =>
  new UrsError('REDIS_UNAVAILABLE', 'Redis away', { canRetry: true, infrastructure: true });

/**
 * A processor of TOPIC whose messages all fail validation (a record with no fields, or `value`), with a
 * ledger answering each claim from `claims` in turn (its last answer again once they run out), the topic's
 * `deadLettering`, and the runner's stop.
 */
function processor(
  claims: DeadLetterClaim[],
  of: { value?: string; deadLettering?: (message: DeadLetteringMessage) => Promise<void> } = {},
) {
  const sent: string[] = [];
  const lines: LogLine[] = [];
  const asked: DeadLetterClaim[] = [];
  const publisher = {
    send: async (topic: string) => void sent.push(topic),
  } as unknown as Publisher;
  const ledger: DeadLetterLedger = {
    claim: async () => {
      const answer = claims[Math.min(asked.length, claims.length - 1)] as DeadLetterClaim;
      asked.push(answer);
      return answer;
    },
    written: async () => undefined,
    release: async () => undefined,
  };
  const metrics = new Registry({ processMetrics: false });
  const held = heldMessages(capturingLogger(lines), metrics);
  const handled = metrics.counter('handled_total', 'handled');
  const settle = createMessageProcessor({
    service: 'test',
    subscriptions: new Map([
      [
        TOPIC,
        {
          topic: TOPIC,
          contract: 'urs/tenant-record',
          handler: async () => undefined,
          ...(of.deadLettering ? { deadLettering: of.deadLettering } : {}),
        },
      ],
    ]),
    publisher,
    dlqTopic: 'dlq',
    deadLetters: ledger,
    log: capturingLogger(lines),
    // Delays of a few ms: full jitter of a 1 ms cap is 0, and a pause of 0 never lets a timer run.
    retry: retryPolicy({ maxAttempts: 3, initialDelayMs: 5, maxDelayMs: 5 }),
    held,
    handled,
    seconds: metrics.histogram('handler_seconds', 'seconds'),
  });
  const runner = new AbortController();
  const work = messageWork({
    topic: TOPIC,
    partition: 2,
    offset: '7',
    key: 'tenant',
    value: of.value ?? '{}',
    stop: runner,
  });
  return { settle: () => settle(work), stop: () => runner.abort(), sent, asked, held, metrics, handled };
}

describe('createMessageProcessor with a dead-letter ledger', () => {
  it('should skip a message whose letter the ledger says was written', async () => {
    const run = processor(['written']);
    await expect(run.settle()).resolves.toBe(true);
    expect(run.sent).toEqual([]);
    expect(run.metrics.expose()).toContain('handled_total{outcome="dead-lettered-before",topic="tenants"} 1');
  });

  it('should hold a message whose letter another process claimed, and write it once that claim lapsed unwritten', async () => {
    // The other process died after claiming: its claim answers busy until it lapses.
    const run = processor(['busy', 'busy', 'claimed']);
    await expect(run.settle()).resolves.toBe(true);
    expect(run.asked).toEqual(['busy', 'busy', 'claimed']);
    expect(run.sent).toEqual(['dlq']);
    expect(run.held.count).toBe(0);
    const metrics = run.metrics.expose();
    expect(metrics).toContain('handled_total{outcome="dead-lettered",topic="tenants"} 1');
    expect(metrics).toContain('handled_total{outcome="held",topic="tenants"} 1');
    expect(metrics).not.toContain('dead-lettered-before');
  });

  it('should leave a message unfinished, not skipped, when the runner stops while another process holds its claim', async () => {
    const run = processor(['busy']);
    const settled = run.settle();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(run.held.count).toBe(1);
    run.stop();
    await expect(settled).resolves.toBe(false);
    expect(run.sent).toEqual([]);
    expect(run.held.count).toBe(0);
    expect(run.metrics.expose()).not.toContain('dead-lettered-before');
  });
});

describe("createMessageProcessor with a topic's deadLettering", () => {
  it('should tell it of each dead letter once the letter is written, now or before', async () => {
    const told: DeadLetteringMessage[] = [];
    for (const claim of ['claimed', 'written'] as const) {
      const run = processor([claim], {
        value: '{"tenantId":"tenant","cycleId":"c1"}',
        deadLettering: async (message) => {
          // Written by this call, or found written before (not written again).
          expect(run.sent).toEqual(claim === 'claimed' ? ['dlq'] : []);
          told.push(message);
        },
      });
      await expect(run.settle()).resolves.toBe(true);
    }
    expect(told).toHaveLength(2);
    for (const message of told) {
      expect(message).toMatchObject({
        topic: TOPIC,
        key: 'tenant',
        payload: { tenantId: 'tenant', cycleId: 'c1' },
      });
      expect(message.code).not.toBe('UNEXPECTED');
    }
  });

  it('should tell it of a message that is not JSON without a payload', async () => {
    const told: DeadLetteringMessage[] = [];
    const run = processor(['claimed'], {
      value: '{"not": json',
      deadLettering: async (m) => void told.push(m),
    });
    await expect(run.settle()).resolves.toBe(true);
    expect(told).toEqual([
      {
        topic: TOPIC,
        partition: 2,
        offset: '7',
        key: 'tenant',
        payload: undefined,
        code: 'MESSAGE_NOT_JSON',
      },
    ]);
    expect(run.sent).toEqual(['dlq']);
  });

  it('should hold the message and try it again in place while Redis fails it, the letter written once', async () => {
    let calls = 0;
    const run = processor(['claimed'], {
      deadLettering: async () => {
        calls++;
        if (calls < 3) throw redisAway();
      },
    });
    await expect(run.settle()).resolves.toBe(true);
    expect(calls).toBe(3);
    expect(run.sent).toEqual(['dlq']);
    expect(run.held.count).toBe(0);
    const metrics = run.metrics.expose();
    expect(metrics).toContain('handled_total{outcome="dead-lettered",topic="tenants"} 1');
    expect(metrics).toContain('handled_total{outcome="held",topic="tenants"} 1');
  });

  it('should leave the message unsettled, its letter written, when the runner stops while Redis fails it', async () => {
    const run = processor(['claimed'], {
      deadLettering: async () => {
        throw redisAway();
      },
    });
    const settled = run.settle();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(run.held.count).toBe(1);
    run.stop();
    await expect(settled).resolves.toBe(false);
    expect(run.sent).toEqual(['dlq']);
    expect(run.held.count).toBe(0);
  });

  it('should leave the message unsettled when the runner stops while its call waits on a Redis that is away', async () => {
    // ioredis queues a command while Redis is away: the call neither answers nor fails.
    const run = processor(['claimed'], { deadLettering: () => new Promise<void>(() => undefined) });
    const settled = run.settle();
    await new Promise((resolve) => setTimeout(resolve, 20));
    run.stop();
    await expect(settled).resolves.toBe(false);
    expect(run.sent).toEqual(['dlq']);
  });

  it('should settle the message, its letter written, when it fails for a reason waiting does not mend', async () => {
    let calls = 0;
    const run = processor(['claimed'], {
      deadLettering: async () => {
        calls++;
        throw new Error('not a batch of a cycle after all');
      },
    });
    await expect(run.settle()).resolves.toBe(true);
    expect(calls).toBe(1);
    expect(run.sent).toEqual(['dlq']);
    expect(run.held.count).toBe(0);
    // Counted apart, so that an alert sees what the error line says: the letter's loss was not recorded.
    expect(run.handled.get({ topic: TOPIC, outcome: 'dead-lettered-unrecorded' })).toBe(1);
  });
});
