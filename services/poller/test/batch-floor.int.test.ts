import { ConfigResourceTypes, type Kafka } from 'kafkajs';
import { surelyTakenRecordBytes } from '@urs/bus';
import { silentLogger } from '@urs/logging';
import { capturingLogger, uniqueId, type LogLine } from '@urs/testkit';
import { createBatchFit } from '../src/batch-fit';
import { readBatchFloor } from '../src/batch-floor';
import { runCycle } from '../src/cycle';
import {
  SMALL_MAX_MESSAGE_BYTES,
  acmeCycle,
  batchesTopicsPerTest,
  countingCycles,
  cycleDepsSending,
  listedDevices,
  pagesGateway,
  smallBatchesTopic,
} from './support/cycle';

/** The broker's own `message.max.bytes`: what a topic without a `max.message.bytes` of its own takes. */
async function brokerMaxMessageBytes(kafka: Kafka): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const { brokers } = await admin.describeCluster();
    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [
        {
          type: ConfigResourceTypes.BROKER,
          name: String(brokers[0]?.nodeId),
          configNames: ['message.max.bytes'],
        },
      ],
    });
    return Number(described.resources[0]?.configEntries[0]?.configValue);
  } finally {
    await admin.disconnect();
  }
}

describe("a poller's floor of the device batches the topic surely takes, from the topic's max.message.bytes", () => {
  const bus = batchesTopicsPerTest([smallBatchesTopic, { prefix: 'device-batches-default' }]);

  it("should be half the topic's own limit, or of the broker's default for a topic without one", async () => {
    const [small, defaulted] = bus.topics as [string, string];
    expect(await readBatchFloor(bus.kafka, small, silentLogger)).toBe(SMALL_MAX_MESSAGE_BYTES / 2);
    const brokerDefault = await brokerMaxMessageBytes(bus.kafka);
    expect(brokerDefault).toBeGreaterThan(0);
    expect(await readBatchFloor(bus.kafka, defaulted, silentLogger)).toBe(
      surelyTakenRecordBytes(brokerDefault),
    );
  });

  it('should be 0 (no batch known to fit) with a warning when the limit cannot be read', async () => {
    const lines: LogLine[] = [];
    const missing = uniqueId('device-batches-missing');
    expect(await readBatchFloor(bus.kafka, missing, capturingLogger(lines), { retries: 0 })).toBe(0);
    expect(lines).toEqual([
      expect.objectContaining({ level: 'warn', topic: missing, reason: expect.any(String) as unknown }),
    ]);
  });

  it("should have a fresh replica's first cycle keep its totals before a single last batch the topic takes", async () => {
    const defender = pagesGateway(async function* () {
      yield { devices: listedDevices(10, 0, false) };
    });
    const { cycles, pending, listed } = countingCycles();
    // The replica's, as its start makes it: no batch taken yet, the floor read from the topic.
    const batchFit = createBatchFit();
    batchFit.takesUpTo(await readBatchFloor(bus.kafka, bus.topic, silentLogger));
    const deps = cycleDepsSending(defender, batchFit, {
      publisher: bus.publisher,
      cycles,
      deviceBatchesTopic: bus.topic,
    });
    const result = await runCycle(deps, acmeCycle());
    expect(result).toMatchObject({ totalBatches: 1, totalDevices: 10 });
    // Kept before the send, which the topic took, then listed.
    expect(pending).toEqual([1]);
    expect(listed).toEqual([1]);
  });
});
