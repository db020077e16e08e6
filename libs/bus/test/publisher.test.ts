import type { Kafka } from 'kafkajs';
import { createPublisher, sizedGroups } from '@urs/bus';
import type { VmsRiskSummary } from '@urs/contracts';

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
