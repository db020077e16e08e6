import type { Contribution, EnrichedDevice, ScoredDevice, SignalValue } from '@urs/contracts';
import type { ScoreResult } from '@urs/scoring';

const text = (value: unknown): string | null =>
  typeof value === 'string' && value.length > 0 ? value : null;

/** A scoring result as the pipeline carries it: the device identity VMS enforces on, and the explanation. */
export function toScoredDevice(enriched: EnrichedDevice, result: ScoreResult): ScoredDevice {
  const machine = enriched.machine;
  const contributions = result.contributions.map((contribution): Contribution & { assumed: boolean } => ({
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
  return {
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
}
