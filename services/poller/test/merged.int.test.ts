import type { Kafka } from 'kafkajs';
import { createPublisher, type Publisher } from '@urs/bus';
import { silentLogger } from '@urs/logging';
import { createCycleStore, createPublishedStore } from '@urs/store';
import { createTestKafka, createUniqueTopics, deleteTopics, testRedisPerTest } from '@urs/testkit';
import { runCycle } from '../src/cycle';
import {
  acmeCycle,
  fitAfterTaking,
  listedDevices,
  pagesGateway,
  readDeviceBatches,
  sealer,
} from './support/cycle';

// The poller's cycle over the real Kafka and Redis, listing devices merged into others: what it records for them
// is what the publisher's completion of the cycle reads.
describe('a cycle that lists devices merged into another one', () => {
  const redis = testRedisPerTest();
  let kafka: Kafka;
  let topics: string[];
  let publisher: Publisher;

  beforeAll(() => {
    kafka = createTestKafka();
  });

  beforeEach(async () => {
    topics = await createUniqueTopics(kafka, [{ prefix: 'device-batches' }]);
    publisher = await createPublisher(kafka);
  });

  afterEach(async () => {
    await publisher.close();
    await deleteTopics(kafka, topics);
  });

  it('should record them in the cycle store, where the completion of the cycle finds those VMS holds to tombstone', async () => {
    const [topic] = topics as [string];
    // 1,200 devices in bulk (batches go as the listing goes), three of them merged: one VMS holds from an
    // earlier cycle, two it never held.
    const devices = [...listedDevices(600), ...listedDevices(600, 600)];
    for (const n of [3, 700, 1_199]) (devices[n] as { merged: boolean }).merged = true;
    const cycles = createCycleStore(redis.client, redis.prefix);
    const published = createPublishedStore(redis.client, redis.prefix);
    const cycle = acmeCycle();
    const earlier = cycle.startedAt - 600_000;
    await published.completeCycle('acme', 'earlier', earlier, 3);
    await published.commit('acme', earlier, [
      { deviceId: 'device-00003', score: 10, band: 'Trustworthy' },
      { deviceId: 'device-00004', score: 10, band: 'Trustworthy' },
    ]);
    const listed = await runCycle(
      {
        defender: pagesGateway(
          async function* () {
            yield { devices: devices.slice(0, 600) };
            yield { devices: devices.slice(600) };
          },
          { mode: 'bulk', perDeviceCapacity: 0 },
        ),
        sealer,
        publisher,
        cycles,
        deviceBatchesTopic: topic,
        batchFit: fitAfterTaking(),
        batchSize: 500,
        maxCycleMs: 300_000,
        logger: silentLogger,
      },
      cycle,
    );
    expect(listed).toMatchObject({ totalDevices: 1_197, merged: 3 });
    const batches = await readDeviceBatches(kafka, topic);
    expect(batches.flatMap((batch) => batch.devices.map((device) => device.id))).not.toContain(
      'device-00003',
    );

    const completed = await published.completeCycle('acme', cycle.cycleId, cycle.startedAt, 3);
    expect(completed).toMatchObject({ gone: ['device-00003'], tombstones: 1, held: 0 });
  }, 30_000);
});
