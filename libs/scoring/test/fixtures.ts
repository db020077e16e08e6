import { DEFAULT_PROFILE, compileProfile, scoreDevice } from '@urs/scoring';
import type { MachineRecord, ScoreResult, VulnerabilityRecord } from '@urs/scoring';

/** The cycle start every example is scored at. */
export const NOW = '2024-01-10T12:00:00Z';
export const NOW_MS = Date.parse(NOW);
const HOUR_MS = 3_600_000;

/** An ISO `lastSeen` this long before NOW, written the way MDE writes it (7 fractional digits). */
export function seenAgo(ms: number): string {
  return `${new Date(NOW_MS - ms).toISOString().slice(0, 19)}.0000000Z`;
}

export const hours = (n: number): number => n * HOUR_MS;
export const days = (n: number): number => n * 24 * HOUR_MS;

/** A healthy device as MDE returns it (with undocumented fields), seen an hour ago; override what a test needs. */
export function machine(overrides: Partial<MachineRecord> = {}): MachineRecord {
  return {
    id: '1e5bc9d7e413ddd7902c2932e418702b84d0cc07',
    computerDnsName: 'mylaptop.contoso.com',
    osPlatform: 'Windows11',
    rbacGroupId: 140,
    rbacGroupName: 'Laptops',
    riskScore: 'None',
    exposureLevel: 'Low',
    defenderAvStatus: 'Updated',
    onboardingStatus: 'Onboarded',
    healthStatus: 'Active',
    lastSeen: seenAgo(hours(1)),
    isAadJoined: true,
    managedBy: 'Intune',
    vmMetadata: null,
    ...overrides,
  };
}

/** `n` distinct critical CVEs (CVSS 9.8) in MDE's vulnerability record shape. */
export function criticalCves(n: number): VulnerabilityRecord[] {
  return Array.from({ length: n }, (_, i) => vulnerability(`CVE-2024-${1000 + i}`, 9.8));
}

export function vulnerability(id: string, cvssV3: number | null): VulnerabilityRecord {
  return {
    id,
    name: id,
    severity: cvssV3 !== null && cvssV3 >= 9 ? 'Critical' : 'High',
    cvssV3,
    exposedMachines: 3,
    publicExploit: false,
    CveSupportability: 'Supported',
  };
}

/** The default profile, compiled. */
export const profile = compileProfile(DEFAULT_PROFILE);

/** Scores `machine(overrides)` at NOW. */
export function score(
  overrides: Partial<MachineRecord>,
  vulns: Parameters<typeof scoreDevice>[1] = [],
  p = profile,
): ScoreResult {
  return scoreDevice(machine(overrides), vulns, p, NOW_MS);
}

/** C and O back from the normalised sub-scores. */
export function subScores(result: ScoreResult): [number, number] {
  return [Math.round(result.criticalScore * 100), Math.round(result.operationalScore * 100)];
}
