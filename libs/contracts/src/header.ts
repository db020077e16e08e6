import type { CycleBatchHeader } from './types';

/**
 * The cycle header of a batch, alone: what a stage copies onto its own message about the same batch
 * (the totals only when the batch has them). Other fields of `batch` are left behind.
 */
export function cycleBatchHeader(batch: CycleBatchHeader): CycleBatchHeader {
  return {
    schemaVersion: 1,
    tenantId: batch.tenantId,
    cycleId: batch.cycleId,
    cycleStartedAt: batch.cycleStartedAt,
    batchIndex: batch.batchIndex,
    lastBatch: batch.lastBatch,
    ...(batch.totalBatches !== undefined ? { totalBatches: batch.totalBatches } : {}),
    ...(batch.totalDevices !== undefined ? { totalDevices: batch.totalDevices } : {}),
  };
}
