import type { ScoredDevice, VmsRiskScore } from './types';

/** The members a `vms.risk-scores` record puts in front of the scored device, in their order. */
export function vmsRecordHead(
  tenantId: string,
  cycleId: string,
  computedAt: string,
): { schemaVersion: 1; tenantId: string; cycleId: string; computedAt: string } {
  return { schemaVersion: 1, tenantId, cycleId, computedAt };
}

/** The key of a device's `vms.risk-scores` record: `{tenantId}/{deviceId}` (a tenant id holds no `/`). */
export function vmsRecordKey(tenantId: string, deviceId: string): string {
  return `${tenantId}/${deviceId}`;
}

/** The tenant and the device a `vms.risk-scores` key names; null for a key of another shape. */
export function vmsRecordKeyParts(key: string): { tenantId: string; deviceId: string } | null {
  const slash = key.indexOf('/');
  if (slash <= 0) return null;
  return { tenantId: key.slice(0, slash), deviceId: key.slice(slash + 1) };
}

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
    key: vmsRecordKey(tenantId, device.deviceId),
    // Written out rather than spread from vmsRecordHead: members then one spread make a fast object; two
    // spreads made a slow (dictionary) one, which more than doubled the publisher's CPU (building,
    // validating and collecting it). The same members in the same order: the publisher's tests compare
    // its bytes with the head's.
    value: { schemaVersion: 1, tenantId, cycleId, computedAt, ...device },
  };
}
