import type { Producer } from 'kafkajs';
import type { DeviceBatch, DeviceRecord, Machine } from '@urs/contracts';
import { toDeviceRecord, validateMessage } from '@urs/contracts';
import type { CycleStore } from '@urs/store';
import type { SimulatorProcess } from './simulator';

export interface InjectOptions {
  sim: SimulatorProcess;
  producer: Producer;
  cycles: CycleStore;
  topic: string;
  tenantId: string;
  azureTenantId: string;
  devices: number;
  mode: 'per-device' | 'bulk';
  cvssThreshold: number;
  /** Devices per batch (the poller's default and maximum is 500). */
  batchSize?: number;
  /** Devices read from the simulator per control call. */
  pageSize?: number;
}

/**
 * Plays the poller for one cycle: reads the tenant's fleet from the simulator's control API (not an
 * MDE call: no quota, not counted), drops merged records and cuts each device to its DeviceRecord as the
 * poller does, and produces the device batches with the cycle bookkeeping the publisher completes
 * against. Batches stream as pages are read.
 */
export async function injectCycle(
  options: InjectOptions,
): Promise<{ cycleId: string; startedAt: number; batches: number; devices: number }> {
  const batchSize = options.batchSize ?? 500;
  const pageSize = options.pageSize ?? 10_000;
  const startedAt = Date.now();
  const cycleId = `${options.tenantId}-${String(startedAt).padStart(13, '0')}`;
  const cycleStartedAt = new Date(startedAt).toISOString();
  await options.cycles.begin({
    tenantId: options.tenantId,
    cycleId,
    startedAt: cycleStartedAt,
    deadlineAt: new Date(startedAt + 3_600_000).toISOString(),
  });
  let batchIndex = 0;
  let total = 0;
  let pending: DeviceRecord[] = [];
  const send = async (devices: DeviceRecord[], last: boolean): Promise<void> => {
    const batch: DeviceBatch = {
      schemaVersion: 1,
      tenantId: options.tenantId,
      cycleId,
      cycleStartedAt,
      batchIndex,
      lastBatch: last,
      ...(last ? { totalBatches: batchIndex + 1, totalDevices: total } : {}),
      vulnerabilityMode: options.mode,
      cvssThreshold: options.cvssThreshold,
      devices,
    };
    validateMessage('urs/device-batch', batch);
    await options.producer.send({
      topic: options.topic,
      messages: [{ key: options.tenantId, value: JSON.stringify(batch) }],
    });
    batchIndex++;
  };
  for (let skip = 0; skip < options.devices; skip += pageSize) {
    const page = await options.sim.machines(
      options.azureTenantId,
      skip,
      Math.min(pageSize, options.devices - skip),
    );
    for (const record of page) {
      if (record['mergedIntoMachineId']) continue;
      pending.push(toDeviceRecord(record as unknown as Machine));
      total++;
    }
    while (pending.length > batchSize) {
      await send(pending.slice(0, batchSize), false);
      pending = pending.slice(batchSize);
    }
  }
  await send(pending, true);
  await options.cycles.listed(options.tenantId, cycleId, {
    totalBatches: batchIndex,
    totalDevices: total,
    listedAt: new Date().toISOString(),
  });
  return { cycleId, startedAt, batches: batchIndex, devices: total };
}
