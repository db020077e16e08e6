import type { Kafka } from 'kafkajs';
import { createPublisher, sizedGroups } from '@urs/bus';
import type { VmsRiskSummary } from '@urs/contracts';
import { canRetry, isInfrastructureFault } from '@urs/resilience';
import { Registry } from '@urs/telemetry';
import { capturingLogger, type LogLine } from '@urs/testkit';
import { createHeldMessages } from '../src/held';

/** Enough of KafkaJS for a publisher: records what would be produced. */
function recordingKafka() {
  const produced: { topic: string; messages: { key: string | null; value: string | null }[] }[] = [];
  const kafka = {
    producer: () => ({
      connect: async () => undefined,
      disconnect: async () => undefined,
      send: async (record: (typeof produced)[number]) => void produced.push(record),
    }),
  } as unknown as Kafka;
  return { kafka, produced };
}

/**
 * What KafkaJS 2.2.4 rejects a send with once its retries are spent on a topic the broker does not have
 * (deleted after the start): the broker's UNKNOWN_TOPIC_OR_PARTITION as the cause of the retries exceeded.
 */
function unknownTopicRejection(): Error {
  const refused = Object.assign(new Error('This server does not host this topic-partition'), {
    name: 'KafkaJSProtocolError',
    type: 'UNKNOWN_TOPIC_OR_PARTITION',
    retriable: true,
  });
  return Object.assign(new Error(refused.message), {
    name: 'KafkaJSNumberOfRetriesExceeded',
    retriable: false,
    retryCount: 4,
    cause: refused,
  });
}

/** A KafkaJS whose producer rejects every send with `rejection`. */
function refusingKafka(rejection: Error): Kafka {
  return {
    producer: () => ({
      connect: async () => undefined,
      disconnect: async () => undefined,
      send: async () => Promise.reject(rejection),
    }),
  } as unknown as Kafka;
}

const summary = (): VmsRiskSummary => ({
  schemaVersion: 1,
  tenantId: 't1',
  cycleId: 'c1',
  status: 'complete',
  cycleStartedAt: '2026-01-01T10:00:00.000Z',
  collectedAt: null,
  publishedAt: '2026-01-01T10:01:00.000Z',
  devices: { total: 0, scored: 0, incomplete: 0, failed: 0 },
  bands: { Trustworthy: 0, 'Low Risk': 0, 'Moderate Risk': 0, Suspicious: 0, 'High Risk': 0 },
  published: { changed: 0, snapshot: false, tombstones: 0 },
  timings: { collectMs: 0, scoreToPublishMs: 0, cycleMs: 0 },
});

describe('createPublisher', () => {
  it('should send the JSON a producer already has, and serialise the value otherwise', async () => {
    const { kafka, produced } = recordingKafka();
    const publisher = await createPublisher(kafka);
    const value = summary();
    const json = JSON.stringify(value);
    await publisher.send('vms.risk-summary', 'urs/vms-risk-summary', [
      { key: 'a', value, json },
      { key: 'b', value },
      { key: 'c', value: null },
    ]);
    expect(produced[0]?.messages.map((m) => m.value)).toEqual([json, json, null]);
  });

  it('should still validate a value sent with its JSON, and send nothing when it is invalid', async () => {
    const { kafka, produced } = recordingKafka();
    const publisher = await createPublisher(kafka);
    const value = { ...summary(), status: 'done' } as unknown as VmsRiskSummary;
    await expect(
      publisher.send('vms.risk-summary', 'urs/vms-risk-summary', [
        { key: 'a', value, json: JSON.stringify(value) },
      ]),
    ).rejects.toMatchObject({ code: 'CONTRACT_INVALID', message: expect.stringContaining('status') });
    expect(produced).toEqual([]);
  });

  it('should send a value marked checked without validating it again, and validate the others of the send', async () => {
    const { kafka, produced } = recordingKafka();
    const publisher = await createPublisher(kafka);
    // Invalid, as nothing a caller marks checked would be: it shows that it is not validated again.
    const value = { ...summary(), status: 'done' } as unknown as VmsRiskSummary;
    const json = JSON.stringify(value);
    await publisher.send('vms.risk-summary', 'urs/vms-risk-summary', [
      { key: 'a', value: summary() },
      { key: 'b', value, json, checked: true },
      { key: 'c', value, checked: true },
    ]);
    expect(produced[0]?.messages.map((m) => m.value)).toEqual([JSON.stringify(summary()), json, json]);
    await expect(
      publisher.send('vms.risk-summary', 'urs/vms-risk-summary', [
        { key: 'b', value, json, checked: true },
        { key: 'a', value },
      ]),
    ).rejects.toMatchObject({ code: 'CONTRACT_INVALID' });
    expect(produced).toHaveLength(1);
  });

  it('should send messages beyond MAX_SEND_BYTES in consecutive requests, in their order', async () => {
    const { kafka, produced } = recordingKafka();
    const publisher = await createPublisher(kafka);
    const value = summary();
    const big = JSON.stringify({ ...value, cycleId: 'x'.repeat(1024 * 1024) });
    // 10 messages of ~1 MiB: 3 in a request (4 MiB at most), then 3, 3 and the last one.
    const messages = Array.from({ length: 10 }, (_, index) => ({ key: `k${index}`, value, json: big }));
    await publisher.send('vms.risk-summary', 'urs/vms-risk-summary', messages);
    expect(produced.map((request) => request.messages.map((m) => m.key))).toEqual([
      ['k0', 'k1', 'k2'],
      ['k3', 'k4', 'k5'],
      ['k6', 'k7', 'k8'],
      ['k9'],
    ]);
  });
});

describe('createPublisher with a topic missing', () => {
  it('should reject a send to a topic the broker does not have with TOPIC_MISSING naming it, held rather than dead-lettered', async () => {
    const publisher = await createPublisher(refusingKafka(unknownTopicRejection()));
    const failure = await publisher
      .send('urs.scores', 'urs/vms-risk-summary', [{ key: 'a', value: summary() }])
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(failure).toMatchObject({
      code: 'TOPIC_MISSING',
      message: expect.stringMatching(/urs\.scores.*recreate.*restart/),
      details: { topic: 'urs.scores' },
    });
    // A REST write answers 503 for it, and a consumer holds its message until the topic is back.
    expect(canRetry(failure)).toBe(true);
    expect(isInfrastructureFault(failure)).toBe(true);
  });

  it('should name the missing topic in the warning that messages are held', async () => {
    const publisher = await createPublisher(refusingKafka(unknownTopicRejection()));
    const failure = await publisher.sendRaw('urs.dlq', [{ key: 'a', value: '{}' }]).then(
      () => undefined,
      (error: unknown) => error,
    );
    const lines: LogLine[] = [];
    const held = createHeldMessages({
      log: capturingLogger(lines),
      gauge: new Registry({ processMetrics: false }).gauge('urs_consumer_held_messages', 'held'),
      labels: { group: 'g' },
      notReadyAfterMs: 30_000,
      logIntervalMs: 60_000,
    });
    const hold = held.hold(failure, { offset: '1' });
    hold.failedAgain(failure, { offset: '1' });
    hold.release();
    const warnings = lines.filter((line) => line.level === 'warn');
    expect(warnings).toEqual([
      expect.objectContaining({
        code: 'TOPIC_MISSING',
        reason: expect.stringMatching(/urs\.dlq.*recreate.*restart/),
      }),
    ]);
  });

  it('should pass any other failure on as KafkaJS gave it', async () => {
    const refused = Object.assign(new Error('Connection error'), {
      name: 'KafkaJSConnectionError',
      retriable: true,
    });
    const publisher = await createPublisher(refusingKafka(refused));
    await expect(
      publisher.send('urs.scores', 'urs/vms-risk-summary', [{ key: 'a', value: summary() }]),
    ).rejects.toBe(refused);
  });
});

describe('sizedGroups', () => {
  const message = (key: string, bytes: number) => ({ key, value: Buffer.alloc(bytes - key.length) });

  it('should keep groups within the bytes given, a larger message alone, and the order', () => {
    const groups = sizedGroups(
      [message('a', 40), message('b', 60), message('c', 150), message('d', 10)],
      100,
    );
    expect(groups.map((group) => group.map((m) => m.key))).toEqual([['a', 'b'], ['c'], ['d']]);
    expect(sizedGroups([], 100)).toEqual([]);
    expect(sizedGroups([{ key: null, value: null }], 0)).toEqual([[{ key: null, value: null }]]);
  });
});
