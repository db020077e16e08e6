import type { Publisher } from '@urs/bus';
import type { DeadLetter } from '@urs/contracts';
import { UrsError } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import { capturingLogger, type LogLine } from '@urs/testkit';
import { createMessageProcessor, type MessageWork } from '../src/handle';
import { heldMessages, messageWork } from './work';

const TENANT = '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9';
const SECRET = 'Zx9~real-secret';

/** A device batch of cycle `c-42`, valid or (with an unknown field) not, carrying a secret in either case. */
function batch(extra: object = {}): string {
  return JSON.stringify({
    schemaVersion: 1,
    tenantId: TENANT,
    cycleId: 'c-42',
    cycleStartedAt: '2026-01-01T00:00:00.000Z',
    batchIndex: 0,
    lastBatch: true,
    totalBatches: 1,
    totalDevices: 0,
    vulnerabilityMode: 'bulk',
    cvssThreshold: 7,
    devices: [],
    ...extra,
  });
}

function processor(lines: LogLine[], handler: () => Promise<void>) {
  const metrics = new Registry({ processMetrics: false });
  const sent: DeadLetter[] = [];
  const publisher = {
    send: async (_topic: string, _contract: string, messages: { value: unknown }[]) => {
      sent.push(...messages.map((message) => message.value as DeadLetter));
    },
  } as unknown as Publisher;
  const settle = createMessageProcessor({
    service: 'test',
    subscriptions: new Map([['batches', { topic: 'batches', contract: 'urs/device-batch', handler }]]),
    publisher,
    dlqTopic: 'dlq',
    log: capturingLogger(lines),
    retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 1, multiplier: 1 },
    held: heldMessages(capturingLogger(lines), metrics),
    handled: metrics.counter('handled', 'handled'),
    seconds: metrics.histogram('seconds', 'seconds'),
  });
  return { settle, sent };
}

function work(value: string | null, key: string | null = TENANT): MessageWork {
  return messageWork({ topic: 'batches', partition: 2, offset: '7', key, value });
}

const where = { topic: 'batches', partition: 2, offset: '7', tenantId: TENANT };

describe('createMessageProcessor', () => {
  it('should log a retry and a dead letter with the tenant id and the cycle id, and nothing of the payload', async () => {
    const lines: LogLine[] = [];
    let calls = 0;
    const { settle } = processor(lines, async () => {
      calls++;
      throw new UrsError('REDIS_DOWN', 'redis is down', { canRetry: calls === 1 });
    });
    expect(await settle(work(batch()))).toBe(true);
    expect(lines.map((line) => line.message)).toEqual(['handler failed, retrying', 'message dead-lettered']);
    expect(lines[0]).toMatchObject({
      ...where,
      cycleId: 'c-42',
      code: 'REDIS_DOWN',
      reason: 'redis is down',
    });
    expect(lines[1]).toMatchObject({ ...where, cycleId: 'c-42', code: 'REDIS_DOWN' });
    expect(lines.flatMap((line) => Object.keys(line))).not.toEqual(
      expect.arrayContaining(['devices', 'payload', 'value']),
    );
  });

  it('should log the cycle id of a message that does not match its contract, and never its payload', async () => {
    const lines: LogLine[] = [];
    const { settle, sent } = processor(lines, async () => undefined);
    expect(await settle(work(batch({ clientSecret: SECRET })))).toBe(true);
    expect(sent.map((letter) => letter.error.code)).toEqual(['CONTRACT_INVALID']);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ ...where, cycleId: 'c-42', message: 'message dead-lettered' });
    expect(JSON.stringify(lines)).not.toContain(SECRET);
  });

  it('should log a dead letter without a key, a cycle id or a JSON payload as where it is alone', async () => {
    const lines: LogLine[] = [];
    const { settle } = processor(lines, async () => undefined);
    expect(await settle(work('not json', null))).toBe(true);
    expect(await settle(work(JSON.stringify({ cycleId: 42 })))).toBe(true);
    expect(lines[0]).toMatchObject({ topic: 'batches', partition: 2, offset: '7', code: 'MESSAGE_NOT_JSON' });
    expect(lines[0]).not.toHaveProperty('tenantId');
    expect(lines[0]).not.toHaveProperty('cycleId');
    expect(lines[1]).toMatchObject(where);
    expect(lines[1]).not.toHaveProperty('cycleId');
  });
});
