import type { ScoredDevice, VmsRiskScore } from './types';

/**
 * A scored device as its `vms.risk-scores` record: key `{tenantId}/{deviceId}`, value the device with the
 * record's header in front (`computedAt` is when the device was scored).
 */
export function vmsRecord(
  tenantId: string,
  cycleId: string,
  computedAt: string,
  device: ScoredDevice,
): { key: string; value: VmsRiskScore } {
  return {
    key: `${tenantId}/${device.deviceId}`,
    value: { schemaVersion: 1, tenantId, cycleId, computedAt, ...device },
  };
}
