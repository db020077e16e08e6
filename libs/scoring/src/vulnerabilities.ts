import { ScoringError } from './errors';

/**
 * One record of `GET /api/machines/{id}/vulnerabilities`: only the two fields the model reads are typed;
 * the API's many others (name, severity, exposedMachines, the PascalCase `CveSupportability`…) pass
 * through untouched. `Id`/`CvssV3` spellings are accepted too.
 */
export interface VulnerabilityRecord {
  /** The CVE id, e.g. `CVE-2024-21413`. */
  id?: string;
  /** CVSS v3 base score 0–10; null when Microsoft has none. */
  cvssV3?: number | null;
  [field: string]: unknown;
}

/**
 * What the vuln-fetcher hands the scorer instead of the full list (the `VulnerabilitySummary` of
 * `@urs/contracts`, field for field): a device with hundreds of CVEs travels in a few hundred bytes and
 * still names the CVEs that weigh most.
 */
export interface VulnerabilitySummary {
  /** Distinct CVE ids with cvssV3 ≥ cvssThreshold; the only field the model itself needs. */
  criticalCveCount: number;
  /** Distinct CVE ids of any score. */
  totalCveCount: number;
  /** The highest cvssV3 among them, or null when none has a score. */
  maxCvss: number | null;
  /** The threshold criticalCveCount was counted with; scoring refuses a summary made with another one. */
  cvssThreshold: number;
  /** Up to TOP_CVE_IDS distinct CVE ids, highest cvssV3 first (ties by id, unscored last). */
  topCveIds: string[];
}

/** How many CVE ids a summary names. */
export const TOP_CVE_IDS = 10;

/**
 * The minimal form of the criticalCves signal: just the count, and when known the threshold it was
 * counted with and when the list was fetched (ISO 8601, kept as the signal's timestamp). A
 * VulnerabilitySummary is one of these.
 */
export interface CriticalCveCount {
  criticalCveCount: number;
  cvssThreshold?: number;
  fetchedAt?: string;
}

/**
 * The vulnerability input of `scoreDevice`: the raw MDE list, a summary or a bare count, or null/undefined
 * when the list could not be fetched (the criticalCves signal is then missing).
 */
export type VulnerabilityInput = readonly VulnerabilityRecord[] | CriticalCveCount | null | undefined;

/**
 * Reads the CVE id of the record at `index`, in upper case as CVE ids are written (and as the pipeline reads
 * them: the same CVE sent in two cases counts once); throws naming the field when it is not a non-empty string.
 */
export function cveIdOf(record: unknown, index: number): string {
  if (typeof record !== 'object' || record === null || Array.isArray(record)) {
    throw new ScoringError('VULNERABILITY_INVALID', `vulnerabilities[${index}]: must be an object`);
  }
  const r = record as Record<string, unknown>;
  const id = r.id !== undefined ? r.id : r.Id;
  if (typeof id !== 'string' || id.length === 0) {
    throw new ScoringError(
      'VULNERABILITY_INVALID',
      `vulnerabilities[${index}].id: must be a non-empty string (the CVE id)`,
    );
  }
  return id.toUpperCase();
}

/** Reads the CVSS v3 score of a record: a number 0–10, a numeric string, or NaN when null/absent. */
export function cvssOf(record: Record<string, unknown>, index: number): number {
  const raw = record.cvssV3 !== undefined ? record.cvssV3 : record.CvssV3;
  if (raw === null || raw === undefined) return NaN;
  const value =
    typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
  if (!(value >= 0 && value <= 10)) {
    throw new ScoringError(
      'VULNERABILITY_INVALID',
      `vulnerabilities[${index}].cvssV3: must be a number from 0 to 10 or null (got ${JSON.stringify(raw)})`,
    );
  }
  return value;
}

/**
 * Counts the distinct CVE ids with cvssV3 ≥ cvssThreshold (the same CVE is listed once per vulnerable
 * product, so it must count once). Throws a ScoringError naming the record for a malformed entry.
 */
export function countCriticalCves(vulnerabilities: readonly unknown[], cvssThreshold: number): number {
  let count = 0;
  let first: string | undefined;
  let seen: Set<string> | undefined;
  for (let i = 0; i < vulnerabilities.length; i += 1) {
    const record = vulnerabilities[i];
    const id = cveIdOf(record, i);
    if (!(cvssOf(record as Record<string, unknown>, i) >= cvssThreshold)) continue;
    // Most devices have zero or one critical CVE: no Set until a second one shows up.
    if (first === undefined) {
      first = id;
      count = 1;
    } else if (id !== first) {
      seen ??= new Set([first]);
      if (!seen.has(id)) {
        seen.add(id);
        count += 1;
      }
    }
  }
  return count;
}

/**
 * Condenses a device's MDE vulnerability list into the summary the scorer needs, for one threshold (the
 * tenant profile's `operational.criticalCves.cvssThreshold`). Throws a ScoringError naming the record for
 * a malformed entry.
 */
export function summariseVulnerabilities(
  vulnerabilities: readonly unknown[],
  cvssThreshold: number,
): VulnerabilitySummary {
  if (!Array.isArray(vulnerabilities)) {
    throw new ScoringError('VULNERABILITY_INVALID', 'vulnerabilities: must be an array');
  }
  // Each distinct id with its highest score (NaN when it never has one).
  const best = new Map<string, number>();
  vulnerabilities.forEach((record, i) => {
    const id = cveIdOf(record, i);
    const cvss = cvssOf(record as Record<string, unknown>, i);
    const known = best.get(id);
    if (known === undefined || cvss > known || (Number.isNaN(known) && !Number.isNaN(cvss)))
      best.set(id, cvss);
  });
  let criticalCveCount = 0;
  let maxCvss: number | null = null;
  for (const cvss of best.values()) {
    if (cvss >= cvssThreshold) criticalCveCount += 1;
    if (cvss >= 0 && (maxCvss === null || cvss > maxCvss)) maxCvss = cvss;
  }
  const topCveIds = [...best]
    .sort(([idA, a], [idB, b]) => {
      const scoreA = Number.isNaN(a) ? -1 : a;
      const scoreB = Number.isNaN(b) ? -1 : b;
      return scoreB - scoreA || (idA < idB ? -1 : idA > idB ? 1 : 0);
    })
    .slice(0, TOP_CVE_IDS)
    .map(([id]) => id);
  return { criticalCveCount, totalCveCount: best.size, maxCvss, cvssThreshold, topCveIds };
}
