import type { Kafka } from 'kafkajs';
import { createPublisher, readTopicUpTo, topicOffsets, type Publisher } from '@urs/bus';
import type { DeviceBatch, Machine } from '@urs/contracts';
import { silentLogger } from '@urs/logging';
import type { CycleStore } from '@urs/store';
import { createTestKafka, createUniqueTopics, deleteTopics, uniqueId } from '@urs/testkit';
import { createBatchFit } from '../src/batch-fit';
import { cycleIdOf, runCycle, type CycleDeps } from '../src/cycle';
import type { DefenderGateway } from '../src/defender';
import { sealedRecord as record, sealer } from './support/cycle';

/** The batches topic's limit on a record batch: a batch of 500 devices (~12 KB) is larger. */
const MAX_MESSAGE_BYTES = 8192;

describe('a cycle whose device batch the topic refuses as too large', () => {
  let kafka: Kafka;
  let topics: string[];
  let publisher: Publisher;

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    topics = await createUniqueTopics(kafka, [
      {
        prefix: 'device-batches',
        configEntries: [{ name: 'max.message.bytes', value: String(MAX_MESSAGE_BYTES) }],
      },
    ]);
    publisher = await createPublisher(kafka);
  });

  afterEach(async () => {
    await publisher.close();
    await deleteTopics(kafka, topics);
  });

  it('should send it in smaller batches the topic takes, every device once, numbered as the cycle goes', async () => {
    const [topic] = topics as [string];
    const devices = 1_200;
    const defender: DefenderGateway = {
      forTenant: () => ({
        async *listDevicePages() {
          for (let page = 0; page < devices / 600; page++) {
            yield {
              devices: Array.from({ length: 600 }, (_, n) => ({
                machine: { id: `device-${String(page * 600 + n).padStart(5, '0')}` } as Machine,
                merged: false,
              })),
            };
          }
        },
      }),
      forget: () => undefined,
      close: () => undefined,
      planMode: () => ({ mode: 'bulk', perDeviceCapacity: 0 }),
    };
    const cycles = {
      begin: async () => undefined,
      listed: async () => undefined,
      listingPending: async () => true,
      dropPendingListing: async () => undefined,
      abandon: async () => true,
      withdraw: async () => true,
    } as unknown as CycleStore;
    const deps: CycleDeps = {
      defender,
      sealer,
      publisher,
      cycles,
      deviceBatchesTopic: topic,
      batchFit: createBatchFit(),
      batchSize: 500,
      maxCycleMs: 300_000,
      logger: silentLogger,
    };
    const listed = await runCycle(deps, {
      record: record(),
      cycleId: cycleIdOf('acme', 0),
      startedAt: Date.now(),
      intervalMs: 600_000,
      lease: { tenantId: 'acme', token: '1:poller' },
      signal: new AbortController().signal,
      leaseHeld: () => true,
    });

    const [partition] = await topicOffsets(kafka, topic);
    const batches: DeviceBatch[] = [];
    await readTopicUpTo(
      kafka,
      topic,
      new Map([[0, BigInt(partition?.high ?? '0') - 1n]]),
      uniqueId('read'),
      20_000,
      (messages) => {
        for (const message of messages) batches.push(JSON.parse(String(message.value)) as DeviceBatch);
      },
    );
    // More batches than the three of 500, 500 and 200 listed, each within the topic's limit.
    expect(listed.totalBatches).toBeGreaterThan(3);
    expect(batches.map((batch) => batch.batchIndex)).toEqual(
      Array.from({ length: listed.totalBatches }, (_, n) => n),
    );
    expect(batches.map((batch) => batch.lastBatch)).toEqual(
      Array.from({ length: listed.totalBatches }, (_, n) => n === listed.totalBatches - 1),
    );
    expect(batches.at(-1)).toMatchObject({ totalBatches: listed.totalBatches, totalDevices: devices });
    expect(batches.flatMap((batch) => batch.devices.map((device) => device.id))).toEqual(
      Array.from({ length: devices }, (_, n) => `device-${String(n).padStart(5, '0')}`),
    );
  });
});
