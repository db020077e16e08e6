import { createBatchFit } from '../src/batch-fit';
import { runCycle } from '../src/cycle';
import {
  acmeCycle,
  batchesTopicsPerTest,
  countingCycles,
  cycleDepsSending,
  listedDevices,
  pagesGateway,
  readDeviceBatches,
} from './support/cycle';

describe('a cycle whose device batch the topic refuses as too large', () => {
  // A batch of 500 devices is larger than the topic takes.
  const bus = batchesTopicsPerTest();

  it('should send it in smaller batches the topic takes, every device once, numbered as the cycle goes', async () => {
    const devices = 1_200;
    const defender = pagesGateway(
      async function* () {
        for (let page = 0; page < devices / 600; page++) yield { devices: listedDevices(600, page * 600) };
      },
      { mode: 'bulk', perDeviceCapacity: 0 },
    );
    const deps = cycleDepsSending(defender, createBatchFit(), {
      publisher: bus.publisher,
      cycles: countingCycles().cycles,
      deviceBatchesTopic: bus.topic,
    });
    const listed = await runCycle(deps, acmeCycle());

    const batches = await readDeviceBatches(bus.kafka, bus.topic);
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
