import type { VulnerabilitySummary } from '@urs/contracts';

/** What the summary reads of a vulnerability (per-device entries and bulk rows are normalised to this). */
export interface VulnerabilityLike {
  /** The CVE id. */
  id: string;
  /** CVSS v3 base score 0–10, or null/absent when Microsoft has none. */
  cvssV3?: number | null;
}

/** Ids kept in `topCveIds`. */
export const TOP_CVE_IDS = 10;

/**
 * A device's vulnerabilities condensed for the scorer: distinct CVEs in all and at or above the
 * cycle's CVSS threshold, the highest CVSS, and the ten highest-scored CVE ids (ties by id, so the
 * summary is deterministic). The same CVE listed for several products counts once, at its highest score.
 */
export function summariseVulnerabilities(
  vulnerabilities: readonly VulnerabilityLike[],
  cvssThreshold: number,
): VulnerabilitySummary {
  const best = new Map<string, number>();
  for (const vulnerability of vulnerabilities) {
    const cvss = typeof vulnerability.cvssV3 === 'number' ? vulnerability.cvssV3 : -1;
    const seen = best.get(vulnerability.id);
    if (seen === undefined || cvss > seen) best.set(vulnerability.id, cvss);
  }
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

/** The summary of a device the bulk export does not list: it has no known vulnerability. */
export function emptySummary(cvssThreshold: number): VulnerabilitySummary {
  return { criticalCveCount: 0, totalCveCount: 0, maxCvss: null, cvssThreshold, topCveIds: [] };
}
