import { cveCatalog, type CatalogEntry } from './catalog';
import { generateCveEntries, generatedOnboarding, generateMachine, indexOfMachineId } from './generator';
import { hashString } from './rng';
import type { AffectedSoftware, MachineRecord, VulnerabilityRecord } from './types';
import { exportVolumeOf, softwareOnlyEntries, type ExportVolume, type ExportVolumeSpec } from './volume';

// One tenant's device fleet. Generated devices are identified by index and re-derived on demand;
// only changes (patches, removals, explicit records, vulnerability overrides) are stored, so a
// 100,000-device fleet costs almost nothing until it is read.

/** Also the export's rows per device (see volume.ts): unset, the light mix the benchmark was taken with. */
export interface FleetSpec extends ExportVolumeSpec {
  /** Number of generated devices (0–100,000 is the tested range). Default 0. */
  size: number;
  /** Seed for generation; default derived from the tenant id so every tenant differs. */
  seed?: number;
  /**
   * The export snapshot is generated at most once in this many milliseconds: a device added within it is
   * not in the export (both ways of reading it) until the next generation, which the first read after it
   * makes, as Microsoft serves a snapshot up to 6 hours old. Its other changes show at once. Default 0:
   * regenerated at every change.
   */
  exportSnapshotMs?: number;
}

export interface CveEntryView {
  vulnerability: VulnerabilityRecord;
  software: AffectedSoftware;
  /** The vulnerability as JSON, when already serialised (catalog entries). */
  json?: string;
}

/**
 * How many serialised generated records may be cached, shared by all fleets of one simulator. A
 * record is ~1.1 KB of JSON, so 100,000 cost ~130 MB; caching makes repeated walks ~10x cheaper.
 */
/** A device's export rows as UTF-8 JSON joined by commas, and the byte offset where each row starts. */
export interface RenderedRows {
  bytes: Buffer;
  starts: number[];
}

/** Rows rendered as text, kept as bytes: a cached export is written without encoding it again. */
export function toRenderedRows(rows: readonly string[]): RenderedRows {
  const starts: number[] = [];
  let at = 0;
  for (const row of rows) {
    starts.push(at);
    at += Buffer.byteLength(row) + 1;
  }
  return { bytes: Buffer.from(rows.join(',')), starts };
}

export interface JsonCacheBudget {
  remaining: number;
}

const UNKNOWN_SOFTWARE: AffectedSoftware = {
  vendor: 'unknown',
  name: 'unknown',
  version: '0.0',
  recommendedSecurityUpdate: null,
  recommendedSecurityUpdateId: null,
};

export class Fleet {
  readonly seed: number;
  /** Reference time of generated lastSeen/firstSeen values (fleet creation), so pages are stable. */
  readonly epochMs: number;
  /**
   * When the export snapshot of this fleet was last generated (epoch ms): Microsoft regenerates the
   * vulnerability export every 6 hours, here it is regenerated whenever a change can alter its rows.
   * Starts at `epochMs`; each change moves it to `Math.max(Date.now(), previous + 1)`, so two changes
   * within one millisecond still give two generations. Reading never moves it, except to make a generation
   * that `exportSnapshotMs` held back.
   */
  private generatedAt: number;
  /** See FleetSpec; 0 regenerates at every change. */
  private readonly snapshotMs: number;
  /** The export's volume per device; undefined: the light mix. */
  private readonly volume: ExportVolume | undefined;
  /** Generated devices when the snapshot was generated: the ones after them are not in it. */
  private snapshotGenerated: number;
  /** Explicit records added since the snapshot was generated: not in it. */
  private readonly addedSinceSnapshot = new Set<string>();
  /** A change waits for the next generation (`exportSnapshotMs`). */
  private changedSinceSnapshot = false;
  private generatedCount: number;
  private readonly removed = new Set<number>();
  private readonly patches = new Map<number, Partial<MachineRecord>>();
  private readonly explicit: MachineRecord[] = [];
  private readonly vulnOverrides = new Map<string, VulnerabilityRecord[]>();
  /** Ordinal → generated index, only materialised once something was removed. */
  private liveIndex: Int32Array | null = null;
  /** Generated index → its JSON, for unpatched devices while the budget lasts. */
  private readonly jsonCache = new Map<number, string>();
  private readonly budget: JsonCacheBudget;
  /** Generated index → its export rows, for unpatched devices while `rowsBudget` lasts. */
  private readonly rowsCache = new Map<number, RenderedRows>();
  private readonly rowsBudget: JsonCacheBudget;

  constructor(
    tenantId: string,
    spec: FleetSpec | undefined,
    records: readonly MachineRecord[] | undefined,
    epochMs: number,
    budget: JsonCacheBudget = { remaining: 0 },
    rowsBudget: JsonCacheBudget = { remaining: 0 },
  ) {
    this.budget = budget;
    this.rowsBudget = rowsBudget;
    this.seed = spec?.seed ?? hashString(tenantId);
    this.generatedCount = Math.max(0, Math.floor(spec?.size ?? 0));
    this.epochMs = epochMs;
    // The records the fleet starts with are part of its first generation.
    this.generatedAt = epochMs;
    this.snapshotMs = Math.max(0, spec?.exportSnapshotMs ?? 0);
    this.volume = exportVolumeOf(spec);
    this.snapshotGenerated = this.generatedCount;
    for (const record of records ?? []) this.insertRecord(record);
  }

  /** The generation time of the export snapshot (see `generatedAt`). */
  get generatedAtMs(): number {
    if (this.changedSinceSnapshot && Date.now() - this.generatedAt >= this.snapshotMs) this.generate();
    return this.generatedAt;
  }

  /**
   * A change that can alter the export's rows: the snapshot is regenerated, or, within `exportSnapshotMs`
   * of the last generation, at the first read after it.
   */
  private regenerate(): void {
    if (this.snapshotMs > 0 && Date.now() - this.generatedAt < this.snapshotMs) {
      this.changedSinceSnapshot = true;
      return;
    }
    this.generate();
  }

  private generate(): void {
    this.generatedAt = Math.max(Date.now(), this.generatedAt + 1);
    this.snapshotGenerated = this.generatedCount;
    this.addedSinceSnapshot.clear();
    this.changedSinceSnapshot = false;
  }

  /** Whether the device at `ordinal` is in the export snapshot served now (see `exportSnapshotMs`). */
  private inSnapshot(ordinal: number, record: MachineRecord): boolean {
    if (this.snapshotMs === 0) return true;
    void this.generatedAtMs;
    if (ordinal < this.liveGenerated()) return this.generatedIndexAt(ordinal) < this.snapshotGenerated;
    return !this.addedSinceSnapshot.has(record.id);
  }

  size(): number {
    return this.generatedCount - this.removed.size + this.explicit.length;
  }

  private liveGenerated(): number {
    return this.generatedCount - this.removed.size;
  }

  private generatedIndexAt(ordinal: number): number {
    if (this.removed.size === 0) return ordinal;
    if (!this.liveIndex) {
      const live = new Int32Array(this.liveGenerated());
      let at = 0;
      for (let i = 0; i < this.generatedCount; i++) if (!this.removed.has(i)) live[at++] = i;
      this.liveIndex = live;
    }
    return this.liveIndex[ordinal] as number;
  }

  private generated(index: number): MachineRecord {
    const record = generateMachine(this.seed, index, this.epochMs);
    const patch = this.patches.get(index);
    return patch ? { ...record, ...patch, id: record.id } : record;
  }

  /** The device at position `ordinal` of the current listing order. */
  at(ordinal: number): MachineRecord | undefined {
    if (ordinal < 0 || ordinal >= this.size()) return undefined;
    const liveGenerated = this.liveGenerated();
    if (ordinal < liveGenerated) return this.generated(this.generatedIndexAt(ordinal));
    return this.explicit[ordinal - liveGenerated];
  }

  slice(skip: number, top: number): MachineRecord[] {
    const end = Math.min(this.size(), skip + top);
    const out: MachineRecord[] = [];
    for (let ordinal = Math.max(0, skip); ordinal < end; ordinal++)
      out.push(this.at(ordinal) as MachineRecord);
    return out;
  }

  /** The JSON of the device at `ordinal` (cached for unpatched generated devices). */
  jsonAt(ordinal: number): string | undefined {
    if (ordinal < 0 || ordinal >= this.size()) return undefined;
    const liveGenerated = this.liveGenerated();
    if (ordinal >= liveGenerated) return JSON.stringify(this.explicit[ordinal - liveGenerated]);
    const index = this.generatedIndexAt(ordinal);
    if (this.patches.has(index)) return JSON.stringify(this.generated(index));
    const cached = this.jsonCache.get(index);
    if (cached !== undefined) return cached;
    const json = JSON.stringify(generateMachine(this.seed, index, this.epochMs));
    if (this.budget.remaining > 0) {
      this.budget.remaining--;
      this.jsonCache.set(index, json);
    }
    return json;
  }

  sliceJson(skip: number, top: number): string[] {
    const end = Math.min(this.size(), skip + top);
    const out: string[] = [];
    for (let ordinal = Math.max(0, skip); ordinal < end; ordinal++) out.push(this.jsonAt(ordinal) as string);
    return out;
  }

  /**
   * The export rows of the device at `ordinal`, rendered by `render`; kept for unpatched generated
   * devices without a vulnerability override while the budget lasts. None for a device the snapshot
   * served now does not hold.
   */
  rowsAt(ordinal: number, render: (record: MachineRecord) => string[]): RenderedRows {
    const record = this.at(ordinal);
    if (!record || !this.inSnapshot(ordinal, record)) return toRenderedRows([]);
    const index = ordinal < this.liveGenerated() ? this.generatedIndexAt(ordinal) : -1;
    if (index < 0 || this.patches.has(index) || this.vulnOverrides.has(record.id))
      return toRenderedRows(render(record));
    const cached = this.rowsCache.get(index);
    if (cached !== undefined) return cached;
    const rows = toRenderedRows(render(record));
    if (this.rowsBudget.remaining > 0) {
      this.rowsBudget.remaining--;
      this.rowsCache.set(index, rows);
    }
    return rows;
  }

  /** Serialises every device and renders its export rows now, while the budgets last. */
  warm(render: (record: MachineRecord) => string[]): void {
    const size = this.size();
    for (let ordinal = 0; ordinal < size; ordinal++) {
      if (this.budget.remaining <= 0 && this.rowsBudget.remaining <= 0) return;
      this.jsonAt(ordinal);
      this.rowsAt(ordinal, render);
    }
  }

  private uncache(index: number): void {
    if (this.jsonCache.delete(index)) this.budget.remaining++;
    if (this.rowsCache.delete(index)) this.rowsBudget.remaining++;
  }

  /** Returns the cache budgets this fleet holds (the tenant is being removed). */
  dispose(): void {
    this.budget.remaining += this.jsonCache.size;
    this.jsonCache.clear();
    this.rowsBudget.remaining += this.rowsCache.size;
    this.rowsCache.clear();
  }

  all(): MachineRecord[] {
    return this.slice(0, this.size());
  }

  private locate(id: string): { index: number } | { explicitAt: number } | undefined {
    const index = indexOfMachineId(this.seed, id);
    if (index >= 0 && index < this.generatedCount && !this.removed.has(index)) return { index };
    const explicitAt = this.explicit.findIndex((r) => r.id === id);
    return explicitAt >= 0 ? { explicitAt } : undefined;
  }

  get(id: string): MachineRecord | undefined {
    const where = this.locate(id);
    if (!where) return undefined;
    return 'index' in where ? this.generated(where.index) : this.explicit[where.explicitAt];
  }

  /** Shallow-merges `patch` into a device; returns false when the id is unknown. */
  update(id: string, patch: Partial<MachineRecord>): boolean {
    const where = this.locate(id);
    if (!where) return false;
    const { id: _ignored, ...rest } = patch;
    if ('index' in where) {
      this.patches.set(where.index, { ...this.patches.get(where.index), ...rest });
      this.uncache(where.index);
    } else Object.assign(this.explicit[where.explicitAt] as MachineRecord, rest);
    this.regenerate();
    return true;
  }

  remove(id: string): boolean {
    const where = this.locate(id);
    if (!where) return false;
    if ('index' in where) {
      this.removed.add(where.index);
      this.patches.delete(where.index);
      this.uncache(where.index);
      this.liveIndex = null;
    } else this.explicit.splice(where.explicitAt, 1);
    this.addedSinceSnapshot.delete(id);
    this.vulnOverrides.delete(id);
    this.regenerate();
    return true;
  }

  /** Appends `count` newly generated devices; returns their ids. */
  addGenerated(count: number): string[] {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const index = this.generatedCount++;
      ids.push(generateMachine(this.seed, index, this.epochMs).id);
    }
    this.liveIndex = null;
    if (ids.length > 0) this.regenerate();
    // Explicit records keep their place after generated ones; ordinals beyond generated shift.
    return ids;
  }

  addRecord(record: MachineRecord): void {
    this.insertRecord(record);
    this.addedSinceSnapshot.add(record.id);
    this.regenerate();
  }

  /** Adds an explicit record, leaving the export's generation to the caller. */
  private insertRecord(record: MachineRecord): void {
    if (!/^[0-9a-f]{40}$/i.test(record.id))
      throw new Error(`machine id must be 40 hex characters, got '${record.id}'`);
    if (this.locate(record.id)) throw new Error(`machine '${record.id}' already exists`);
    this.explicit.push({ ...record });
  }

  setVulnerabilities(id: string, vulns: readonly VulnerabilityRecord[]): boolean {
    const where = this.locate(id);
    if (!where) return false;
    if ('index' in where) this.uncache(where.index);
    this.vulnOverrides.set(
      id,
      vulns.map((v) => ({ ...v })),
    );
    this.regenerate();
    return true;
  }

  /** CVEs with the software they affect; undefined when the device is unknown. */
  cveEntries(id: string): CveEntryView[] | undefined {
    const where = this.locate(id);
    if (!where) return undefined;
    const override = this.vulnOverrides.get(id);
    if (override) {
      const byId = catalogById();
      return override.map((v) => ({
        vulnerability: v,
        software: byId.get(v.id)?.software ?? UNKNOWN_SOFTWARE,
      }));
    }
    if ('explicitAt' in where) return [];
    return generateCveEntries(this.seed, where.index, this.onboardingOf(where.index), this.volume);
  }

  /**
   * The installed software a device lists in the export without a CVE; undefined under the light mix (the
   * export then gives one device in ten such a row, see deviceRowsJson).
   */
  softwareOnly(id: string): AffectedSoftware[] | undefined {
    if (!this.volume) return undefined;
    const where = this.locate(id);
    if (!where || 'explicitAt' in where) return [];
    const onboarded = (this.onboardingOf(where.index) ?? '').toLowerCase() === 'onboarded';
    return softwareOnlyEntries(this.seed, where.index, onboarded, this.volume);
  }

  private onboardingOf(index: number): string | undefined {
    const patch = this.patches.get(index);
    return patch && 'onboardingStatus' in patch
      ? patch.onboardingStatus
      : generatedOnboarding(this.seed, index);
  }

  vulnerabilities(id: string): VulnerabilityRecord[] | undefined {
    return this.cveEntries(id)?.map((e) => e.vulnerability);
  }

  /** The JSON array of a device's vulnerabilities, or undefined when the device is unknown. */
  vulnerabilitiesJson(id: string): string | undefined {
    const entries = this.cveEntries(id);
    if (!entries) return undefined;
    return `[${entries.map((e) => e.json ?? JSON.stringify(e.vulnerability)).join(',')}]`;
  }
}

let byIdCache: Map<string, CatalogEntry> | undefined;
function catalogById(): Map<string, CatalogEntry> {
  byIdCache ??= new Map(cveCatalog().map((e) => [e.vulnerability.id, e]));
  return byIdCache;
}
