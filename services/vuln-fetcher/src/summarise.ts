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
  for (const vulnerability of vulnerabilities) keepBest(best, vulnerability.id, cvssOf(vulnerability));
  return summariseBest(best, cvssThreshold);
}

/** A vulnerability's CVSS, -1 when it has none. */
function cvssOf(vulnerability: VulnerabilityLike): number {
  return typeof vulnerability.cvssV3 === 'number' ? vulnerability.cvssV3 : -1;
}

/** Keeps a CVE's highest CVSS (-1 when it has none) in `best`, keyed by CVE id. */
function keepBest(best: Map<string, number>, id: string, cvss: number): void {
  const seen = best.get(id);
  if (seen === undefined || cvss > seen) best.set(id, cvss);
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
 * Folds a bulk export row by row into what the summaries need, so no row is kept once folded in. Per
 * device only its CVEs with their highest CVSS are kept, compactly: each CVE id is stored once for the
 * whole export and named by a small number, and a device holds one flat array of (CVE number, CVSS)
 * pairs, not a Map of strings (a 100,000-device tenant has about half a million such pairs). The export
 * gives no order: a device's rows usually come together, and the CVEs of such a run are kept once
 * each; a device whose rows come in several runs (across pages, say) may hold a CVE once per run until
 * `summaries`, which keeps its highest score. A row folded twice (a retried page) changes nothing.
 * `summaries` gives exactly what `summariseVulnerabilities` gives for each device's whole list.
 */
export class VulnerabilityFolder {
  /** CVE id → its number; `cveIds[number]` is the id. */
  private readonly cveNumbers = new Map<string, number>();
  private readonly cveIds: string[] = [];
  /** Device id → [cve, cvss, cve, cvss, …] (cvss -1 when it has none). */
  private readonly byDevice = new Map<string, number[]>();
  /** The device of the current run of rows, its pairs, and where each CVE of the run sits in them. */
  private runDevice: string | undefined;
  private runPairs: number[] = [];
  private readonly runCves = new Map<number, number>();

  /** Folds one row of a device: one of its CVEs, or none (the device is still listed, as all clear). */
  add(deviceId: string, vulnerability: VulnerabilityLike | undefined): void {
    if (deviceId !== this.runDevice) {
      this.runDevice = deviceId;
      this.runCves.clear();
      let pairs = this.byDevice.get(deviceId);
      if (!pairs) {
        pairs = [];
        this.byDevice.set(deviceId, pairs);
      }
      this.runPairs = pairs;
    }
    if (!vulnerability) return;
    const pairs = this.runPairs;
    const cve = this.cveNumber(vulnerability.id);
    const cvss = cvssOf(vulnerability);
    const seen = this.runCves.get(cve);
    if (seen === undefined) {
      this.runCves.set(cve, pairs.length);
      pairs.push(cve, cvss);
    } else if (cvss > (pairs[seen + 1] as number)) pairs[seen + 1] = cvss;
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
    for (const [deviceId, pairs] of this.byDevice)
      yield [deviceId, this.summaryOfPairs(pairs, cvssThreshold)];
  }

  /** One device's summary at the cycle's threshold; undefined when the export does not list the device. */
  summaryOf(deviceId: string, cvssThreshold: number): VulnerabilitySummary | undefined {
    const pairs = this.byDevice.get(deviceId);
    return pairs && this.summaryOfPairs(pairs, cvssThreshold);
  }

  private summaryOfPairs(pairs: readonly number[], cvssThreshold: number): VulnerabilitySummary {
    const best = new Map<string, number>();
    for (let index = 0; index < pairs.length; index += 2)
      keepBest(best, this.cveIds[pairs[index] as number] as string, pairs[index + 1] as number);
    return summariseBest(best, cvssThreshold);
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
