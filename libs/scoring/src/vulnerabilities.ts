import {
  type VulnerabilityLike,
  type VulnerabilitySummary,
  readCvss,
  summariseVulnerabilities as summarise,
  unreadableScore,
} from '@urs/contracts/vulnerabilities';
import { ScoringError } from './errors';

export type { VulnerabilitySummary };

/**
 * One record of `GET /api/machines/{id}/vulnerabilities`: only the two fields the model reads are typed;
 * the API's many others (name, severity, exposedMachines, the PascalCase `CveSupportability`…) pass
 * through untouched. `Id`/`CvssV3` spellings are accepted too.
 */
export interface VulnerabilityRecord {
  /** The CVE id, e.g. `CVE-2024-21413`. */
  id?: string;
  /** CVSS v3 base score 0–10 (or numeric text of one, read by `readCvss`); null when Microsoft has none. */
  cvssV3?: number | string | null;
  [field: string]: unknown;
}

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

/** Told of each vulnerability record skipped as unreadable: its index in the list, and why. */
export type SkippedVulnerability = (index: number, reason: string) => void;

/**
 * Reads a list of MDE vulnerability records as the pipeline reads the per-device endpoint's: each record's
 * CVE id (`id`/`Id`, a non-empty string, read in upper case: the same CVE sent in two cases counts once) and
 * CVSS v3 score (`cvssV3`/`CvssV3`, by `readCvss`, the one rule of `@urs/contracts/vulnerabilities`). A record
 * that is not an object, has no id or an unreadable score is skipped and told to `skipped`. A list that had
 * records, none of them readable, is null: its CVEs are unknown (criticalCves missing), not none.
 */
export function readVulnerabilities(
  records: readonly unknown[],
  skipped?: SkippedVulnerability,
): VulnerabilityLike[] | null {
  if (!Array.isArray(records)) {
    throw new ScoringError('VULNERABILITY_INVALID', 'vulnerabilities: must be an array');
  }
  const read: VulnerabilityLike[] = [];
  records.forEach((record: unknown, index) => {
    const reason = readRecord(record, read);
    if (reason !== undefined) skipped?.(index, reason);
  });
  return read.length === 0 && records.length > 0 ? null : read;
}

/** Adds the record to `read` when it can be read; otherwise why it cannot. */
function readRecord(record: unknown, read: VulnerabilityLike[]): string | undefined {
  if (typeof record !== 'object' || record === null || Array.isArray(record))
    return 'record is not an object';
  const fields = record as Record<string, unknown>;
  const id = fields.id !== undefined ? fields.id : fields.Id;
  if (typeof id !== 'string' || id.length === 0) return 'id must be a non-empty string (the CVE id)';
  const key = fields.cvssV3 === undefined && fields.CvssV3 !== undefined ? 'CvssV3' : 'cvssV3';
  const cvssV3 = readCvss(fields[key]);
  if (cvssV3 === undefined) return unreadableScore(key, fields[key]);
  read.push({ id: id.toUpperCase(), cvssV3 });
  return undefined;
}

/**
 * Condenses a device's MDE vulnerability list into the summary the scorer needs, for one threshold (the
 * tenant profile's `operational.criticalCves.cvssThreshold`): the records read by `readVulnerabilities`
 * (those it skips told to `skipped`), summarised as the vuln-fetcher summarises them. Null when the list had
 * records, none of them readable (scored as vulnerabilities not fetched).
 */
export function summariseVulnerabilities(
  records: readonly unknown[],
  cvssThreshold: number,
  skipped?: SkippedVulnerability,
): VulnerabilitySummary | null {
  const read = readVulnerabilities(records, skipped);
  return read && summarise(read, cvssThreshold);
}
