import {
  missingReasonsOf,
  type Contribution,
  type DeviceRecord,
  type EnrichedDevice,
  type ScoredDevice,
  type SignalValue,
} from '@urs/contracts';
import type { ScoreResult } from '@urs/scoring';

const text = (value: unknown): string | null =>
  typeof value === 'string' && value.length > 0 ? value : null;

/**
 * A scoring result as the pipeline carries it: the device identity VMS enforces on, and the explanation,
 * with why each missing signal is missing (`missingReasons`: codes, never the fetch error's text, which may
 * quote Microsoft). A device missing nothing, most of them, gets no `missingReasons` at all.
 */
export function toScoredDevice(enriched: EnrichedDevice, result: ScoreResult): ScoredDevice {
  const machine = enriched.machine;
  const contributions = result.contributions.map((contribution): Contribution => ({
    group: contribution.group,
    signal: contribution.signal,
    value: contribution.value,
    points: contribution.points,
    assumed: contribution.assumed,
  }));
  const signals: Record<string, SignalValue> = {};
  for (const [name, observation] of Object.entries(result.signals)) {
    signals[name] = { value: observation.value, at: observation.at };
  }
  const device: ScoredDevice = {
    deviceId: machine.id,
    computerDnsName: text(machine.computerDnsName),
    aadDeviceId: text(machine.aadDeviceId),
    lastIpAddress: text(machine.lastIpAddress),
    lastExternalIpAddress: text(machine.lastExternalIpAddress),
    ipAddresses: Array.isArray(machine.ipAddresses) ? machine.ipAddresses : [],
    machineTags: Array.isArray(machine.machineTags) ? machine.machineTags : [],
    rbacGroupName: text(machine.rbacGroupName),
    score: result.score,
    band: result.band,
    criticalScore: result.criticalScore,
    operationalScore: result.operationalScore,
    contributions,
    missing: [...result.missing],
    signals,
    profileHash: result.profileHash,
    vulnerabilities: enriched.vulnerabilities,
  };
  // Set after the literal, not spread into it: a spread would build every device as a slower object.
  const reasons = missingReasonsOf(result.missing, enriched.fetchError);
  if (reasons !== undefined) device.missingReasons = reasons;
  return device;
}

/** The scored signals that are the machine record's own fields, by the record's field name. */
const MACHINE_SIGNALS = [
  ['riskScore', 'riskScore'],
  ['exposureLevel', 'exposureLevel'],
  ['defenderAvStatus', 'avStatus'],
  ['onboardingStatus', 'onboarding'],
  ['healthStatus', 'healthStatus'],
] as const;

/**
 * The device record a scored device was scored from, as far as the model and VMS read it: its identity,
 * and each machine signal's observed value (`lastSeen` is the signals' `at`). Scoring it again with the
 * same vulnerabilities gives the same scored device, so a device can be scored again with other
 * vulnerabilities without its machine record (a bulk cycle's correction, see the handler).
 */
export function deviceRecordOf(scored: ScoredDevice): DeviceRecord {
  const record: DeviceRecord = {
    id: scored.deviceId,
    computerDnsName: scored.computerDnsName,
    aadDeviceId: scored.aadDeviceId,
    lastIpAddress: scored.lastIpAddress,
    lastExternalIpAddress: scored.lastExternalIpAddress,
    ipAddresses: scored.ipAddresses,
    machineTags: scored.machineTags,
    rbacGroupName: scored.rbacGroupName,
  };
  const fields = record as Record<string, unknown>;
  for (const [field, signal] of MACHINE_SIGNALS) {
    const observed = scored.signals[signal];
    if (observed !== undefined && observed.value !== null) fields[field] = observed.value;
  }
  const seen = scored.signals['inactivity']?.at;
  if (typeof seen === 'string') record.lastSeen = seen;
  return record;
}
