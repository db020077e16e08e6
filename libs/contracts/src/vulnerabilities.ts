/**
 * `@urs/contracts/vulnerabilities`: how every path reads a vulnerability's CVSS score and summarises a
 * device's vulnerabilities (the Defender client's per-device and export readers, the vuln-fetcher and its
 * export fold thread, `@urs/scoring` and `urs score`). It loads nothing at run time (no schema compiler),
 * so a thread that folds export rows can take it without the contracts' validators or the scoring model.
 */
import type { VulnerabilitySummary } from './types';

export type { VulnerabilitySummary };

const NUMERIC_TEXT = /^\d+(\.\d+)?$/;

/**
 * A vulnerability's CVSS v3 score as every path reads it (the per-device `cvssV3`, a Double in Microsoft's
 * documentation; the export's `cvssScore`, a String there; `urs score`'s and `scoreDevice`'s input): a number
 * from 0 to 10, or numeric text of one (digits, an optional fraction), is the score; null or absent (and blank
 * text) is null, Microsoft having no v3 score for the CVE, a known value that counts as not critical; anything
 * else (other text such as `1e1` or `0x5`, NaN, a negative score, one above 10) is undefined: the row is
 * unreadable, and is skipped and counted as such.
 */
export function readCvss(value: unknown): number | null | undefined {
  if (typeof value === 'number') return value >= 0 && value <= 10 ? value : undefined;
  if (value === null || value === undefined) return null;
  if (typeof value !== 'string') return undefined;
  const text = value.trim();
  if (text === '') return null;
  return NUMERIC_TEXT.test(text) ? readCvss(Number(text)) : undefined;
}

/** Why a row whose score `readCvss` cannot read (`value`, sent in `field`) is skipped. */
export function unreadableScore(field: string, value: unknown): string {
  return `${field} must be a number from 0 to 10, numeric text or null (got ${typeof value === 'number' ? String(value) : JSON.stringify(value)})`;
}

/** What a summary reads of a vulnerability, once read (per-device entries and export rows are read to this). */
export interface VulnerabilityLike {
  /** The CVE id, as read (upper case). */
  id: string;
  /** CVSS v3 base score 0–10 as `readCvss` reads it, or null/absent when Microsoft has none. */
  cvssV3?: number | null;
}

/** How many CVE ids a summary names (`topCveIds`). */
export const TOP_CVE_IDS = 10;

/** A read vulnerability's CVSS as the summary ranks it: -1 when it has none. */
export function cvssRank(vulnerability: VulnerabilityLike): number {
  return typeof vulnerability.cvssV3 === 'number' ? vulnerability.cvssV3 : -1;
}

/** Keeps a CVE's highest CVSS (-1 when it has none) in `best`, keyed by CVE id. */
export function keepBest(best: Map<string, number>, id: string, cvss: number): void {
  const seen = best.get(id);
  if (seen === undefined || cvss > seen) best.set(id, cvss);
}

/** The summary of each distinct CVE id with its highest CVSS (-1: none), as `keepBest` keeps them. */
export function summariseBest(
  best: ReadonlyMap<string, number>,
  cvssThreshold: number,
): VulnerabilitySummary {
  let criticalCveCount = 0;
  let maxCvss: number | null = null;
  for (const cvss of best.values()) {
    if (cvss >= cvssThreshold) criticalCveCount++;
    if (cvss >= 0 && (maxCvss === null || cvss > maxCvss)) maxCvss = cvss;
  }
  const topCveIds = [...best]
    .sort(([idA, a], [idB, b]) => b - a || (idA < idB ? -1 : idA > idB ? 1 : 0))
    .slice(0, TOP_CVE_IDS)
    .map(([id]) => id);
  return { criticalCveCount, totalCveCount: best.size, maxCvss, cvssThreshold, topCveIds };
}

/**
 * A device's read vulnerabilities condensed for the scorer: distinct CVEs in all and at or above the
 * cycle's CVSS threshold, the highest CVSS, and the ten highest-scored CVE ids (ties by id, unscored last,
 * so the summary is deterministic). The same CVE listed for several products counts once, at its highest score.
 */
export function summariseVulnerabilities(
  vulnerabilities: readonly VulnerabilityLike[],
  cvssThreshold: number,
): VulnerabilitySummary {
  const best = new Map<string, number>();
  for (const vulnerability of vulnerabilities) keepBest(best, vulnerability.id, cvssRank(vulnerability));
  return summariseBest(best, cvssThreshold);
}
