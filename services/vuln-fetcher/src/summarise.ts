// The summary's module alone (no schema compiler): the export fold's thread loads this file.
import {
  type VulnerabilityLike,
  type VulnerabilitySummary,
  cvssRank,
  keepBest,
  summariseBest,
} from '@urs/contracts/vulnerabilities';
import { ScoreColumn } from './score-column';

export type { VulnerabilityLike };

/** A fold's state as one thread hands it to another. */
export interface FoldState {
  cveIds: string[];
  cves: Int32Array<ArrayBuffer>;
  /** The scores as ScoreColumn gives them out: in tenths, or as given. */
  scores: Int8Array<ArrayBuffer> | Float64Array<ArrayBuffer>;
  runStarts: Int32Array<ArrayBuffer>;
  runEnds: Int32Array<ArrayBuffer>;
  runBefore: Int32Array<ArrayBuffer>;
  lastRun: Map<string, number>;
  unreadable: Set<string>;
}

/** Grows a typed array to hold at least `needed` items, by half again: less slack than doubling. */
function grown<T extends Int32Array>(array: T, needed: number, make: (length: number) => T): T {
  if (needed <= array.length) return array;
  const bigger = make(Math.max(needed, Math.ceil(array.length * 1.5)));
  bigger.set(array);
  return bigger;
}

/**
 * Folds a bulk export row by row into what the summaries need, so no row is kept once folded in. Only
 * each device's CVEs with their highest CVSS are kept, compactly: each CVE id is stored once for the
 * whole export and named by a small number, and the (CVE number, CVSS) pairs of every device sit one
 * after the other in an Int32Array and a ScoreColumn, 5 bytes a pair (CVSS in tenths). A 100,000-device
 * tenant has from half a million pairs (~6 rows a device) to ~2.8 million (~57 rows a device, half of
 * them installed software without a CVE): ~14 MB of fold this way, where 12 bytes a pair took ~34 MB.
 * The export gives no order: a device's rows usually come together, as one run of pairs, and the CVEs
 * of a run are kept once each; a device whose rows come in several runs (across pages, say) has one run
 * of pairs per stretch, each linked to the one before, and may hold a CVE once per run until its
 * summary, which keeps the highest score. A row folded twice (a retried page) changes nothing.
 * `summaries` gives exactly what `summariseVulnerabilities` (`@urs/contracts/vulnerabilities`) gives for
 * each device's whole list, and null
 * for a device whose CVE rows all were unreadable: as per device, its CVEs are not known, not none.
 */
export class VulnerabilityFolder {
  /** CVE id → its number; `cveIds[number]` is the id. */
  private readonly cveNumbers = new Map<string, number>();
  private cveIds: string[] = [];
  /** The pairs: a CVE's number and its CVSS (-1 when it has none); `pairs` of them are in use. */
  private cves = new Int32Array(1024);
  private scores = ScoreColumn.withRoom(1024);
  private pairs = 0;
  /** Per run: its first pair, the pair after its last, and the device's run before it (-1: none). */
  private runStarts = new Int32Array(256);
  private runEnds = new Int32Array(256);
  private runBefore = new Int32Array(256);
  private runs = 0;
  /** Device id → its latest run. */
  private lastRun = new Map<string, number>();
  /** The devices with a row that could not be read (rare: kept by id, apart from the runs). */
  private unreadable = new Set<string>();
  /** The device of the current run, and where each CVE of the run sits among the pairs. */
  private runDevice: string | undefined;
  private readonly runCves = new Map<number, number>();

  /**
   * Folds one row of a device: one of its CVEs, none (installed software without a CVE: the device is still
   * listed, as all clear), or null for a row that could not be read (the device is listed, its CVEs unknown
   * unless it has a readable CVE row).
   */
  add(deviceId: string, vulnerability: VulnerabilityLike | undefined | null): void {
    if (vulnerability === null) {
      this.unreadable.add(deviceId);
      return;
    }
    if (deviceId !== this.runDevice) {
      this.runDevice = deviceId;
      this.runCves.clear();
      this.startRun(deviceId);
    }
    if (!vulnerability) return;
    const cve = this.cveNumber(vulnerability.id);
    const cvss = cvssRank(vulnerability);
    const seen = this.runCves.get(cve);
    if (seen === undefined) {
      const at = this.pairs++;
      if (at === this.cves.length) {
        this.cves = grown(this.cves, at + 1, (length) => new Int32Array(length));
        this.scores.grow(at + 1);
      }
      this.cves[at] = cve;
      this.scores.set(at, cvss);
      this.runEnds[this.runs - 1] = at + 1;
      this.runCves.set(cve, at);
    } else if (cvss > this.scores.get(seen)) this.scores.set(seen, cvss);
  }

  /** Devices folded in so far. */
  get size(): number {
    let size = this.lastRun.size;
    for (const deviceId of this.unreadable) if (!this.lastRun.has(deviceId)) size++;
    return size;
  }

  /**
   * Each folded device's summary at the cycle's threshold (null: its rows all were unreadable), one at a
   * time, so the caller can write them out in bounded slices instead of holding a summary per device at once.
   */
  *summaries(cvssThreshold: number): IterableIterator<[string, VulnerabilitySummary | null]> {
    for (const [deviceId, run] of this.lastRun)
      yield [deviceId, this.summaryOfRun(deviceId, run, cvssThreshold)];
    for (const deviceId of this.unreadable) if (!this.lastRun.has(deviceId)) yield [deviceId, null];
  }

  /**
   * One device's summary at the cycle's threshold; null when the export listed it in rows none of which
   * could be read, undefined when it did not list it.
   */
  summaryOf(deviceId: string, cvssThreshold: number): VulnerabilitySummary | null | undefined {
    const run = this.lastRun.get(deviceId);
    if (run !== undefined) return this.summaryOfRun(deviceId, run, cvssThreshold);
    return this.unreadable.has(deviceId) ? null : undefined;
  }

  /**
   * The summary of a device with runs, `run` its latest; null when it had a row that could not be read and no
   * CVE row that could: rows of installed software without a CVE say nothing of its CVEs.
   */
  private summaryOfRun(deviceId: string, run: number, cvssThreshold: number): VulnerabilitySummary | null {
    if (this.unreadable.has(deviceId) && !this.hasPairs(run)) return null;
    return this.summaryFrom(run, cvssThreshold);
  }

  /** Whether any run of the device whose latest run is `run` holds a CVE. */
  private hasPairs(run: number): boolean {
    for (; run >= 0; run = this.runBefore[run] as number)
      if ((this.runEnds[run] as number) > (this.runStarts[run] as number)) return true;
    return false;
  }

  /** The summary of the device whose latest run is `run`, over all its runs. */
  private summaryFrom(run: number, cvssThreshold: number): VulnerabilitySummary {
    const best = new Map<string, number>();
    for (; run >= 0; run = this.runBefore[run] as number) {
      const end = this.runEnds[run] as number;
      for (let at = this.runStarts[run] as number; at < end; at++)
        keepBest(best, this.cveIds[this.cves[at] as number] as string, this.scores.get(at));
    }
    return summariseBest(best, cvssThreshold);
  }

  private startRun(deviceId: string): void {
    const run = this.runs++;
    if (run === this.runStarts.length) {
      const make = (length: number): Int32Array<ArrayBuffer> => new Int32Array(length);
      this.runStarts = grown(this.runStarts, run + 1, make);
      this.runEnds = grown(this.runEnds, run + 1, make);
      this.runBefore = grown(this.runBefore, run + 1, make);
    }
    this.runStarts[run] = this.pairs;
    this.runEnds[run] = this.pairs;
    this.runBefore[run] = this.lastRun.get(deviceId) ?? -1;
    this.lastRun.set(deviceId, run);
  }

  /** The fold's state, for another thread to take over (`VulnerabilityFolder.from`); its buffers may be moved. */
  state(): FoldState {
    return {
      cveIds: this.cveIds,
      cves: this.cves.subarray(0, this.pairs),
      scores: this.scores.values(this.pairs),
      runStarts: this.runStarts.subarray(0, this.runs),
      runEnds: this.runEnds.subarray(0, this.runs),
      runBefore: this.runBefore.subarray(0, this.runs),
      lastRun: this.lastRun,
      unreadable: this.unreadable,
    };
  }

  /**
   * A fold made of another's state, which it takes over (the state is this fold's from then on): it gives
   * the same summaries, and folds more rows as the other would.
   */
  static from(state: FoldState): VulnerabilityFolder {
    const folder = new VulnerabilityFolder();
    folder.cveIds = state.cveIds;
    state.cveIds.forEach((id, number) => folder.cveNumbers.set(id, number));
    folder.cves = state.cves;
    folder.scores = ScoreColumn.of(state.scores);
    folder.pairs = state.cves.length;
    folder.runStarts = state.runStarts;
    folder.runEnds = state.runEnds;
    folder.runBefore = state.runBefore;
    folder.runs = state.runStarts.length;
    folder.lastRun = state.lastRun;
    folder.unreadable = state.unreadable;
    return folder;
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

/** Rows of an export read by `read` folded row by row on this thread: only each device's CVEs and best CVSS stay. */
export async function foldRows(
  read: (
    onRow: (deviceId: string, vulnerability: VulnerabilityLike | null | undefined) => void,
  ) => Promise<unknown>,
): Promise<VulnerabilityFolder> {
  const folder = new VulnerabilityFolder();
  await read((deviceId, vulnerability) => folder.add(deviceId, vulnerability));
  return folder;
}

/**
 * The fold's summaries as JSON (as the bulk cache stores them), in slices of `size` devices: what the
 * cache compares with a stored export without the fold's summaries all existing at once.
 */
export function* summaryJsonSlices(
  folder: VulnerabilityFolder,
  cvssThreshold: number,
  size = 1000,
): Generator<[string, string][]> {
  let slice: [string, string][] = [];
  for (const [deviceId, summary] of folder.summaries(cvssThreshold)) {
    slice.push([deviceId, JSON.stringify(summary)]);
    if (slice.length === size) {
      yield slice;
      slice = [];
    }
  }
  if (slice.length > 0) yield slice;
}

/** The summary of a device the bulk export does not list: it has no known vulnerability. */
export function emptySummary(cvssThreshold: number): VulnerabilitySummary {
  return { criticalCveCount: 0, totalCveCount: 0, maxCvss: null, cvssThreshold, topCveIds: [] };
}
