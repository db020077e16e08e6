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
 * Folds a bulk export page by page into what the summaries need, so a page's rows can be dropped as soon
 * as they are folded in. Per device only its distinct CVEs with their highest CVSS are kept, compactly:
 * each CVE id is stored once for the whole export and named by a small number, and a device holds one
 * flat array of (CVE number, best CVSS) pairs, not a Map of strings (a 100,000-device tenant has about
 * half a million such pairs). A device's rows may span several pages and the same CVE may come on
 * several rows; `summaries` gives exactly what `summariseVulnerabilities` gives for each device's whole list.
 */
export class VulnerabilityFolder {
  /** CVE id → its number; `cveIds[number]` is the id. */
  private readonly cveNumbers = new Map<string, number>();
  private readonly cveIds: string[] = [];
  /** Device id → [cve, cvss, cve, cvss, …] (cvss -1 when it has none), each CVE once. */
  private readonly byDevice = new Map<string, number[]>();

  /** Folds one page: device id → its vulnerabilities on that page (possibly none). */
  addPage(page: ReadonlyMap<string, readonly VulnerabilityLike[]>): void {
    for (const [deviceId, list] of page) this.add(deviceId, list);
  }

  /** Folds some of a device's vulnerabilities; a device with none is still listed (as all clear). */
  add(deviceId: string, vulnerabilities: readonly VulnerabilityLike[]): void {
    let pairs = this.byDevice.get(deviceId);
    if (!pairs) {
      pairs = [];
      this.byDevice.set(deviceId, pairs);
    }
    // Where each of the device's CVEs sits in `pairs`, built per call: a device's rows come together,
    // so this costs one pass over what the device already has only when its rows span two pages.
    const at = new Map<number, number>();
    for (let index = 0; index < pairs.length; index += 2) at.set(pairs[index] as number, index);
    for (const vulnerability of vulnerabilities) {
      const cve = this.cveNumber(vulnerability.id);
      const cvss = typeof vulnerability.cvssV3 === 'number' ? vulnerability.cvssV3 : -1;
      const seen = at.get(cve);
      if (seen === undefined) {
        at.set(cve, pairs.length);
        pairs.push(cve, cvss);
      } else if (cvss > (pairs[seen + 1] as number)) pairs[seen + 1] = cvss;
    }
  }

  /** Devices folded in so far. */
  get size(): number {
    return this.byDevice.size;
  }

  /**
   * Each folded device's summary at the cycle's threshold, one at a time, so the caller can write them
   * out in bounded slices instead of holding a summary per device at once.
   */
  *summaries(cvssThreshold: number): IterableIterator<[string, VulnerabilitySummary]> {
    for (const [deviceId, pairs] of this.byDevice) {
      const best = new Map<string, number>();
      for (let index = 0; index < pairs.length; index += 2)
        best.set(this.cveIds[pairs[index] as number] as string, pairs[index + 1] as number);
      yield [deviceId, summariseBest(best, cvssThreshold)];
    }
  }

  private cveNumber(id: string): number {
    let number = this.cveNumbers.get(id);
    if (number === undefined) {
      number = this.cveIds.length;
      this.cveNumbers.set(id, number);
      this.cveIds.push(id);
    }
    return number;
  }
}

/** The summary of a device the bulk export does not list: it has no known vulnerability. */
export function emptySummary(cvssThreshold: number): VulnerabilitySummary {
  return { criticalCveCount: 0, totalCveCount: 0, maxCvss: null, cvssThreshold, topCveIds: [] };
}
