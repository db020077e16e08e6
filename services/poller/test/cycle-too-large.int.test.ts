import type { Kafka } from 'kafkajs';
import { createPublisher, type Publisher } from '@urs/bus';
import { silentLogger } from '@urs/logging';
import type { CycleStore } from '@urs/store';
import { createTestKafka, createUniqueTopics, deleteTopics } from '@urs/testkit';
import { createBatchFit } from '../src/batch-fit';
import { runCycle, type CycleDeps } from '../src/cycle';
import {
  acmeCycle,
  listedDevices,
  pagesGateway,
  readDeviceBatches,
  sealer,
  smallBatchesTopic,
} from './support/cycle';

describe('a cycle whose device batch the topic refuses as too large', () => {
  let kafka: Kafka;
  let topics: string[];
  let publisher: Publisher;

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    // A batch of 500 devices is larger than the topic takes.
    topics = await createUniqueTopics(kafka, [smallBatchesTopic]);
    publisher = await createPublisher(kafka);
  });

  afterEach(async () => {
    await publisher.close();
    await deleteTopics(kafka, topics);
  });

  it('should send it in smaller batches the topic takes, every device once, numbered as the cycle goes', async () => {
    const [topic] = topics as [string];
    const devices = 1_200;
    const defender = pagesGateway(
      async function* () {
        for (let page = 0; page < devices / 600; page++) yield { devices: listedDevices(600, page * 600) };
      },
      { mode: 'bulk', perDeviceCapacity: 0 },
    );
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
    const listed = await runCycle(deps, acmeCycle());

    const batches = await readDeviceBatches(kafka, topic);
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
