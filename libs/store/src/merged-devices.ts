/**
 * The devices a cycle's listing saw merged into another device (Defender's `mergedIntoMachineId`),
 * `{prefix}cycle-merged:{tenantId}:{cycleId}` (set of device ids): the poller records them
 * (`CycleStore.mergedDevices`) before it sends the cycle's last batch, and the publisher's completion of the cycle
 * tombstones those VMS holds (`PublishedStore.completeCycle`). It expires with the cycle's hash.
 */
export const mergedDevicesKey = (prefix: string, tenantId: string, cycleId: string): string =>
  `${prefix}cycle-merged:${tenantId}:${cycleId}`;
