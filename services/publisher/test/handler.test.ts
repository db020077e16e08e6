import type { Kafka } from 'kafkajs';
import { createPublisher, deviceBatchMessage, parseJsonBytes, type Publisher } from '@urs/bus';
import { validateMessage, type ScoreBatch } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import { Registry } from '@urs/telemetry';
import { scoredDevice } from '@urs/testkit';
import type { CycleCompletion } from '../src/completion';
import { createPublishHandler } from '../src/handler';
import { createInOrder } from '../src/in-order';

/**
 * A scored batch as the bus hands it over: read from its bytes and validated, by lines (its devices' bytes
 * kept, as the publisher's records reuse them) as a batch of this size is.
 */
function consumedBatch(overrides: Partial<ScoreBatch> = {}): ScoreBatch {
  const header = {
    schemaVersion: 1,
    tenantId: 't1',
    cycleId: 'c1',
    cycleStartedAt: '2026-01-01T10:00:00.000Z',
    batchIndex: 0,
    lastBatch: false,
    collectedAt: '2026-01-01T10:00:30.000Z',
    scoredAt: '2026-01-01T10:00:31.000Z',
    ...overrides,
  };
  const devices = Array.from({ length: 400 }, (_, index) =>
    index % 2 ? scoredDevice(`d${index}`, 85, 'High Risk') : scoredDevice(`d${index}`, 10, 'Trustworthy'),
  );
  return validateMessage('urs/score-batch', parseJsonBytes(deviceBatchMessage('t1', header, devices).json));
}

/** The publish handler with every device changed and Redis answering at once, sending with `publisher`. */
function handlerWith(publisher: Publisher) {
  return createPublishHandler({
    cycles: { recordBatch: async () => ({ first: true, state: { kind: 'open' } }) as never },
    published: { changed: async (_lease, _at, refs) => refs, renewTenantLease: async () => true },
    completion: { tryComplete: async () => undefined } as unknown as CycleCompletion,
    inOrder: createInOrder(),
    leasing: { holder: 'h1', ttlMs: 10_000 },
    publisher,
    topic: 'vms.risk-scores',
    logger: silentLogger,
    metrics: new Registry({ processMetrics: false }),
  });
}

describe('createPublishHandler records', () => {
  it("should have only a batch's first record validated by the send, each record the JSON of its value", async () => {
    const sent: Parameters<Publisher['send']>[2][] = [];
    const handler = handlerWith({
      send: async (_topic, _contract, messages) => void sent.push(messages),
      sendRaw: async () => undefined,
      close: async () => undefined,
    });
    await handler({ value: consumedBatch() } as never);
    const records = sent[0] ?? [];
    expect(records.map((record) => [record.key, record.checked])).toEqual(
      Array.from({ length: 400 }, (_, index) => [`t1/d${index}`, index === 0 ? undefined : true]),
    );
    for (const record of records) {
      expect(Buffer.isBuffer(record.json)).toBe(true);
      expect(String(record.json)).toBe(JSON.stringify(record.value));
      expect(validateMessage('urs/vms-risk-score', record.value)).toBe(record.value);
    }
  });

  it("should send none of a batch's records when their head breaks the record's rules", async () => {
    const produced: unknown[] = [];
    const kafka = {
      producer: () => ({
        connect: async () => undefined,
        disconnect: async () => undefined,
        send: async (request: unknown) => void produced.push(request),
      }),
    } as unknown as Kafka;
    const handler = handlerWith(await createPublisher(kafka));
    // Valid as a score batch's header, but not as a record's `computedAt`: the head is checked once, in the first record.
    const batch = { ...consumedBatch(), scoredAt: 'yesterday' };
    await expect(handler({ value: batch } as never)).rejects.toMatchObject({ code: 'CONTRACT_INVALID' });
    expect(produced).toEqual([]);
    await handler({ value: consumedBatch() } as never);
    expect(produced).toHaveLength(1);
  });
});
