import type { DeviceRecord, Machine } from './types';

/**
 * The fields of a machine that travel on `urs.device-batches` and `urs.devices-enriched`: its id (the
 * vulnerability calls and the device's key), what the scoring model reads (@urs/scoring scoreDevice) and
 * the identity VMS enforces on (`vms.risk-scores`). A listed machine carries some thirty fields, ~1.1 KB of
 * JSON; every stage parses, validates and re-serialises what travels, so the rest stays with the poller.
 */
/** The device identity VMS enforces on: required in every `vms.risk-scores` record. */
export const VMS_IDENTITY_FIELDS = [
  'computerDnsName',
  'aadDeviceId',
  'lastIpAddress',
  'lastExternalIpAddress',
  'ipAddresses',
  'machineTags',
  'rbacGroupName',
] as const satisfies readonly (keyof DeviceRecord)[];

export const DEVICE_RECORD_FIELDS = [
  'id',
  // Scoring inputs.
  'riskScore',
  'exposureLevel',
  'defenderAvStatus',
  'onboardingStatus',
  'healthStatus',
  'lastSeen',
  // Whether the bulk export's snapshot can list the device (not one first seen after it, or less than a day
  // before).
  'firstSeen',
  // Whether Microsoft holds the device's vulnerabilities (`vulnerabilitiesNotHeld`).
  'isExcluded',
  ...VMS_IDENTITY_FIELDS,
] as const satisfies readonly (keyof DeviceRecord)[];

/**
 * A listed machine (keys normalised to the documented camelCase, as @urs/defender returns it) cut down to
 * its DEVICE_RECORD_FIELDS. A field the machine lacks stays absent, so the projection of a projection is
 * the same record. Values are shared, not copied.
 */
export function toDeviceRecord(machine: Machine): DeviceRecord {
  const record: Record<string, unknown> = {};
  for (const field of DEVICE_RECORD_FIELDS) {
    const value = machine[field];
    if (value !== undefined) record[field] = value;
  }
  return record as DeviceRecord;
}

/** Why Microsoft holds no vulnerabilities of a device (see `vulnerabilitiesNotHeld`). */
export type VulnerabilitiesNotHeld = 'EXCLUDED';

/**
 * Why Microsoft holds no vulnerabilities of a device, or null when it may: one excluded from vulnerability
 * management (`isExcluded`) has an empty list by exclusion, which is no observation: its criticalCves is
 * missing, and no call of the tenant's quota is spent on it. A device not onboarded (CanBeOnboarded,
 * Unsupported, InsufficientInfo) is asked for as any other: network devices and devices reached by an
 * authenticated scan are assessed without a sensor, and their vulnerabilities are real observations.
 */
export function vulnerabilitiesNotHeld(
  record: Pick<DeviceRecord, 'isExcluded'>,
): VulnerabilitiesNotHeld | null {
  return record.isExcluded === true ? 'EXCLUDED' : null;
}
