import type { DeadLetteringMessage } from '@urs/bus';
import { MAX_CYCLE_ID_LENGTH } from '@urs/contracts';
import type { CycleStore } from './cycles';

/** A batch of a cycle, as its dead letter names it. */
export interface LostBatch {
  tenantId: string;
  cycleId: string;
  batchIndex: number;
  /** How many devices the batch held; absent when its payload does not tell. */
  devices?: number;
}

/**
 * The batch of a cycle a dead-lettered message was, from its payload's cycle header (`tenantId`, `cycleId`,
 * `batchIndex`), which a batch that failed its schema may still carry whole; null when the payload names
 * no batch, or a tenant other than the message's key (every batch is keyed by its tenant). A correction batch
 * (`corrections`, `replaces`) counts no device of its own: its devices are those of the cycle's batches.
 */
export function lostBatchOf(message: Pick<DeadLetteringMessage, 'key' | 'payload'>): LostBatch | null {
  const { payload } = message;
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return null;
  const { tenantId, cycleId, batchIndex, devices, corrections, replaces } = payload as Record<
    string,
    unknown
  >;
  if (typeof tenantId !== 'string' || tenantId === '' || message.key !== tenantId) return null;
  if (typeof cycleId !== 'string' || cycleId === '' || cycleId.length > MAX_CYCLE_ID_LENGTH) return null;
  if (typeof batchIndex !== 'number' || !Number.isSafeInteger(batchIndex) || batchIndex < 0) return null;
  if (corrections !== undefined || replaces !== undefined)
    return { tenantId, cycleId, batchIndex, devices: 0 };
  return { tenantId, cycleId, batchIndex, ...(Array.isArray(devices) ? { devices: devices.length } : {}) };
}

/**
 * The `deadLettering` of a topic of cycle batches (`urs.device-batches`, `urs.devices-enriched`,
 * `urs.device-scores`): records the batch a dead letter names as lost (`CycleStore.lost`), so that its
 * cycle is published without waiting for its deadline, and a bulk cycle's corrections do not wait for it.
 */
export function recordLostBatches(
  cycles: Pick<CycleStore, 'lost'>,
  now: () => number = Date.now,
): (message: DeadLetteringMessage) => Promise<void> {
  return async (message) => {
    const batch = lostBatchOf(message);
    if (batch === null) return;
    await cycles.lost(batch.tenantId, batch.cycleId, batch.batchIndex, batch.devices, now());
  };
}
