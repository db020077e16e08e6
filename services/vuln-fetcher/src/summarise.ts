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
  for (const vulnerability of vulnerabilities) foldVulnerability(best, vulnerability);
  return summariseBest(best, cvssThreshold);
}

/** Keeps a CVE's highest CVSS (-1 when it has none) in `best`, keyed by CVE id. */
function foldVulnerability(best: Map<string, number>, vulnerability: VulnerabilityLike): void {
  const cvss = typeof vulnerability.cvssV3 === 'number' ? vulnerability.cvssV3 : -1;
  const seen = best.get(vulnerability.id);
  if (seen === undefined || cvss > seen) best.set(vulnerability.id, cvss);
}

function summariseBest(best: ReadonlyMap<string, number>, cvssThreshold: number): VulnerabilitySummary {
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
 * Folds a bulk export page by page into what the summaries need: per device only its distinct CVE
 * ids with their highest CVSS (a number per id, not the row or vulnerability objects), so a page's
 * rows can be dropped as soon as they are folded in. A device's rows may span several pages and the
 * same CVE may come on several rows; `summaries` gives exactly what `summariseVulnerabilities` gives
 * for each device's whole list.
 */
export class VulnerabilityFolder {
  private readonly byDevice = new Map<string, Map<string, number>>();

  /** Folds one page: device id → its vulnerabilities on that page (possibly none). */
  addPage(page: ReadonlyMap<string, readonly VulnerabilityLike[]>): void {
    for (const [deviceId, list] of page) this.add(deviceId, list);
  }

  /** Folds some of a device's vulnerabilities; a device with none is still listed (as all clear). */
  add(deviceId: string, vulnerabilities: readonly VulnerabilityLike[]): void {
    let best = this.byDevice.get(deviceId);
    if (!best) {
      best = new Map();
      this.byDevice.set(deviceId, best);
    }
    for (const vulnerability of vulnerabilities) foldVulnerability(best, vulnerability);
  }

  /** Devices folded in so far. */
  get size(): number {
    return this.byDevice.size;
  }

  /** Each folded device's summary at the cycle's threshold. */
  summaries(cvssThreshold: number): Map<string, VulnerabilitySummary> {
    const summaries = new Map<string, VulnerabilitySummary>();
    for (const [deviceId, best] of this.byDevice) summaries.set(deviceId, summariseBest(best, cvssThreshold));
    return summaries;
  }
}

/** The summary of a device the bulk export does not list: it has no known vulnerability. */
export function emptySummary(cvssThreshold: number): VulnerabilitySummary {
  return { criticalCveCount: 0, totalCveCount: 0, maxCvss: null, cvssThreshold, topCveIds: [] };
}
