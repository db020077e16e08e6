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
 * What the vuln-fetcher hands the scorer instead of the full list: the critical CVEs under one threshold.
 * A device with hundreds of CVEs thus travels in a few hundred bytes, and still names the CVEs that
 * drove its score.
 */
export interface VulnerabilitySummary {
  /** Distinct CVE ids with cvssV3 ≥ cvssThreshold, sorted. */
  criticalCveIds: string[];
  /** `criticalCveIds.length`; the only field the model itself needs. */
  criticalCveCount: number;
  /** Distinct CVE ids of any score. */
  cveCount: number;
  /** The highest cvssV3 among them, or null when none has a score. */
  maxCvss: number | null;
  /** The threshold the ids were selected with; scoring refuses a summary made with another one. */
  cvssThreshold: number;
  /** When the list was fetched (ISO 8601), kept as the criticalCves signal's timestamp. */
  fetchedAt?: string;
}

/**
 * The minimal form of the criticalCves signal: just the count (and, when known, the threshold it was
 * counted with and when). A VulnerabilitySummary is one of these.
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

/** Reads the CVE id of the record at `index`; throws naming the field when it is not a non-empty string. */
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
  return id;
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
 * tenant profile's `operational.criticalCves.cvssThreshold`).
 */
export function summariseVulnerabilities(
  vulnerabilities: readonly unknown[],
  cvssThreshold: number,
  fetchedAt?: string,
): VulnerabilitySummary {
  if (!Array.isArray(vulnerabilities)) {
    throw new ScoringError('VULNERABILITY_INVALID', 'vulnerabilities: must be an array');
  }
  const all = new Set<string>();
  const critical = new Set<string>();
  let maxCvss: number | null = null;
  vulnerabilities.forEach((record, i) => {
    const id = cveIdOf(record, i);
    const cvss = cvssOf(record as Record<string, unknown>, i);
    all.add(id);
    if (cvss >= cvssThreshold) critical.add(id);
    if (cvss >= 0 && (maxCvss === null || cvss > maxCvss)) maxCvss = cvss;
  });
  const criticalCveIds = [...critical].sort();
  const summary: VulnerabilitySummary = {
    criticalCveIds,
    criticalCveCount: criticalCveIds.length,
    cveCount: all.size,
    maxCvss,
    cvssThreshold,
  };
  if (fetchedAt !== undefined) summary.fetchedAt = fetchedAt;
  return summary;
}
