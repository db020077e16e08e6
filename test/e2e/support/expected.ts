// The scoring model of shared/docs/scoring.md for the default profile, written again from the document
// and independent of libs/scoring, so the end-to-end tests check the pipeline against the specification.

type Table = Record<string, number>;

const RISK: Table = { low: 20, medium: 50, high: 100 };
const RISK_KNOWN = ['none', 'informational'];
const EXPOSURE: Table = { medium: 40, high: 80 };
const EXPOSURE_KNOWN = ['none', 'low'];
const AV: Table = { disabled: 100, notreporting: 60 };
const AV_KNOWN = ['updated', 'notupdated', 'notsupported'];
const HEALTH: Table = { inactive: 60, impairedcommunication: 50 };
const HEALTH_KNOWN = ['active', 'nosensordata', 'nosensordataimpairedcommunication'];
const CVSS_THRESHOLD = 9.0;
const BANDS: [number, string][] = [
  [20, 'Trustworthy'],
  [40, 'Low Risk'],
  [60, 'Moderate Risk'],
  [80, 'Suspicious'],
  [100, 'High Risk'],
];

export interface Expected {
  score: number;
  band: string;
  /** At least one signal was missing. */
  incomplete: boolean;
  /**
   * The inactivity level (`lt1d` … `gt14d`), null when lastSeen is missing: the one part of a device's
   * explanation that moves with time alone. A device can change level at equal score (its operational
   * points already at 100), and VMS is sent the new explanation.
   */
  inactivity: string | null;
  /**
   * Why each missing signal is missing, as the record says it: `NOT_REPORTED` for a value the device list
   * does not give, `EXCLUDED` for the CVEs of a device excluded from vulnerability management; undefined when
   * nothing is missing (the record then has none).
   */
  missingReasons: Record<string, string> | undefined;
}

interface Lookup {
  points: number;
  missing: boolean;
  level?: string;
}

function lookup(value: unknown, table: Table, known: string[]): Lookup {
  if (typeof value !== 'string' || value.trim() === '') return { points: 0, missing: true };
  const key = value.toLowerCase();
  if (key in table) return { points: table[key] as number, missing: false };
  return { points: 0, missing: !known.includes(key) };
}

function onboarding(value: unknown): Lookup {
  if (typeof value !== 'string' || value.trim() === '' || value.toLowerCase() === 'unknown')
    return { points: 0, missing: true };
  return { points: value.toLowerCase() === 'onboarded' ? 0 : 100, missing: false };
}

function inactivityPoints(lastSeen: unknown, cycleStartMs: number): Lookup {
  if (typeof lastSeen !== 'string') return { points: 0, missing: true };
  // Up to 7 fraction digits: keep the milliseconds only, as the model ages by whole days.
  const seen = Date.parse(lastSeen.replace(/(\.\d{3})\d+/, '$1'));
  if (Number.isNaN(seen)) return { points: 0, missing: true };
  const days = Math.max(0, Math.floor((cycleStartMs - seen) / 3_600_000 / 24));
  const [level, points]: [string, number] =
    days === 0
      ? ['lt1d', 0]
      : days <= 3
        ? ['1to3d', 20]
        : days <= 7
          ? ['4to7d', 40]
          : days <= 14
            ? ['8to14d', 70]
            : ['gt14d', 100];
  return { points, missing: false, level };
}

/** Distinct CVE ids with cvssV3 ≥ 9.0. */
export function criticalCves(vulnerabilities: readonly { id?: unknown; cvssV3?: unknown }[]): number {
  const ids = new Set<string>();
  for (const v of vulnerabilities)
    if (typeof v.cvssV3 === 'number' && v.cvssV3 >= CVSS_THRESHOLD) ids.add(String(v.id));
  return ids.size;
}

/**
 * The expected score of one device under the default profile (missing signals: ignore). A device excluded
 * from vulnerability management is not asked for: its criticalCves is missing.
 */
export function expectedScore(
  machine: Record<string, unknown>,
  listed: number | null,
  cycleStartMs: number,
): Expected {
  const excluded = machine['isExcluded'] === true;
  const cves = excluded ? null : listed;
  const critical = [
    lookup(machine['riskScore'], RISK, RISK_KNOWN),
    lookup(machine['exposureLevel'], EXPOSURE, EXPOSURE_KNOWN),
    lookup(machine['defenderAvStatus'], AV, AV_KNOWN),
    onboarding(machine['onboardingStatus']),
  ];
  const inactivity = inactivityPoints(machine['lastSeen'], cycleStartMs);
  const operational = [lookup(machine['healthStatus'], HEALTH, HEALTH_KNOWN), inactivity];
  const c = Math.min(
    100,
    critical.reduce((sum, l) => sum + l.points, 0),
  );
  const o = Math.min(
    100,
    operational.reduce((sum, l) => sum + l.points, 0) + (cves === null ? 0 : Math.min(100, cves * 25)),
  );
  // round half up of (70c + 30o) / 100 on integers
  const score = Math.floor((70 * c + 30 * o + 50) / 100);
  const band = (BANDS.find(([max]) => score <= max) as [number, string])[1];
  const incomplete = cves === null || [...critical, ...operational].some((l) => l.missing);
  const reasons: Record<string, string> = {};
  const signals: [string, Lookup][] = [
    ['riskScore', critical[0] as Lookup],
    ['exposureLevel', critical[1] as Lookup],
    ['avStatus', critical[2] as Lookup],
    ['onboarding', critical[3] as Lookup],
    ['healthStatus', operational[0] as Lookup],
    ['inactivity', inactivity],
  ];
  for (const [signal, found] of signals) if (found.missing) reasons[signal] = 'NOT_REPORTED';
  // The simulator answers every call: CVEs are missing only for a device not asked for.
  if (cves === null) reasons['criticalCves'] = excluded ? 'EXCLUDED' : 'FETCH_FAILED';
  const missingReasons = Object.keys(reasons).length > 0 ? reasons : undefined;
  return { score, band, incomplete, inactivity: inactivity.level ?? null, missingReasons };
}

/** Whether the pipeline scores the device (merged devices are not: their surviving record is). */
export function isScored(machine: Record<string, unknown>): boolean {
  return !machine['mergedIntoMachineId'];
}
