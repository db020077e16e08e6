import type { Kafka } from 'kafkajs';
import { createPublisher } from '@urs/bus';
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
});
