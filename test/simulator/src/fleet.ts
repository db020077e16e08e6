import { cveCatalog, type CatalogEntry } from './catalog';
import {
  generateCveEntries,
  generatedOnboarding,
  generateMachine,
  indexOfMachineId,
  isOnboarded,
} from './generator';
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
   * The export snapshot is generated at most once in this many milliseconds: a change within it (a device
   * added, removed or patched, its CVEs set) is not in the export (both ways of reading it) until the next
   * generation, which the first read after it makes, as Microsoft serves a snapshot up to 6 hours old.
   * Default 0: regenerated at every change. Either way a read of the export keeps to the snapshot its first
   * page was of (see Fleet.exportView).
   */
  exportSnapshotMs?: number;
  /**
   * List a CVE that affects several products or versions (about one catalog CVE in eight, see
   * CatalogEntry.otherProducts) on one export row per product and version, as Microsoft's export has one
   * row per device × software × version × CVE: a device then has the same CVE on two or three rows. The
   * per-device endpoint still lists it once. Default false: one row per CVE, the light mix the benchmark
   * was taken with.
   */
  multiProductCves?: boolean;
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

/**
 * What a fleet holds besides its seed: the live one, changed by every call, and a frozen copy of it per
 * export snapshot. Copies share the records and patches, which are replaced on change, never mutated.
 */
interface FleetState {
  generatedCount: number;
  removed: Set<number>;
  patches: Map<number, Partial<MachineRecord>>;
  explicit: MachineRecord[];
  vulnOverrides: Map<string, VulnerabilityRecord[]>;
  /** Ordinal → generated index, only materialised once something was removed. */
  liveIndex: Int32Array | null;
}

function frozenCopy(state: FleetState): FleetState {
  return {
    generatedCount: state.generatedCount,
    removed: new Set(state.removed),
    patches: new Map(state.patches),
    explicit: [...state.explicit],
    vulnOverrides: new Map(state.vulnOverrides),
    liveIndex: state.liveIndex,
  };
}

/** Export snapshots kept for the reads still paging through them: a $skiptoken of an older one answers 404. */
export const KEPT_SNAPSHOTS = 8;

/** The devices, rows and CVEs of one export snapshot, as a read of it pages through them. */
export interface ExportView {
  /** When the snapshot was generated (epoch ms): a read's next link names it. */
  readonly generation: number;
  size(): number;
  /** The device's export rows (see Fleet.rowsAt). */
  rowsAt(ordinal: number, render: (record: MachineRecord, view: ExportView) => string[]): RenderedRows;
  /** The device's CVEs as its export rows list them (see FleetSpec.multiProductCves). */
  exportEntries(id: string): CveEntryView[] | undefined;
  softwareOnly(id: string): AffectedSoftware[] | undefined;
}

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
  /** See FleetSpec.multiProductCves. */
  private readonly multiProductCves: boolean;
  /** A change waits for the next generation (`exportSnapshotMs`). */
  private changedSinceSnapshot = false;
  /** The fleet as it is now: the listing, the per-device calls and the control API read it. */
  private readonly live: FleetState;
  /** The fleet as of each kept export snapshot, by generation time, oldest first. */
  private readonly snapshots = new Map<number, FleetState>();
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
    this.live = {
      generatedCount: Math.max(0, Math.floor(spec?.size ?? 0)),
      removed: new Set(),
      patches: new Map(),
      explicit: [],
      vulnOverrides: new Map(),
      liveIndex: null,
    };
    this.epochMs = epochMs;
    // The records the fleet starts with are part of its first generation.
    this.generatedAt = epochMs;
    this.snapshotMs = Math.max(0, spec?.exportSnapshotMs ?? 0);
    this.volume = exportVolumeOf(spec);
    this.multiProductCves = spec?.multiProductCves === true;
    for (const record of records ?? []) this.insertRecord(record);
    this.snapshots.set(epochMs, frozenCopy(this.live));
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

  /**
   * The snapshot with the changes `exportSnapshotMs` holds back, made now rather than at the first read
   * after it; its generation time.
   */
  generateHeldBack(): number {
    if (this.changedSinceSnapshot) this.generate();
    return this.generatedAt;
  }

  /** A new export snapshot of the fleet as it is now; the oldest beyond KEPT_SNAPSHOTS is dropped. */
  private generate(): void {
    this.generatedAt = Math.max(Date.now(), this.generatedAt + 1);
    this.changedSinceSnapshot = false;
    this.snapshots.set(this.generatedAt, frozenCopy(this.live));
    for (const generation of this.snapshots.keys()) {
      if (this.snapshots.size <= KEPT_SNAPSHOTS) break;
      this.snapshots.delete(generation);
    }
  }

  /**
   * The export snapshot of `generation` (default: the one served now), or undefined when it is no longer
   * kept. A read pages through the snapshot of its first page: Microsoft's export is a file generated every
   * few hours, which a change of the fleet does not alter under a read (nor move its $skiptoken ordinals).
   */
  exportView(generation: number = this.generatedAtMs): ExportView | undefined {
    const state = this.snapshots.get(generation);
    if (!state) return undefined;
    const view: ExportView = {
      generation,
      size: () => this.sizeOf(state),
      rowsAt: (ordinal, render) => this.rowsOf(state, view, ordinal, render),
      exportEntries: (id) => this.exportEntriesOf(state, id),
      softwareOnly: (id) => this.softwareOnlyOf(state, id),
    };
    return view;
  }

  size(): number {
    return this.sizeOf(this.live);
  }

  private sizeOf(state: FleetState): number {
    return state.generatedCount - state.removed.size + state.explicit.length;
  }

  private liveGenerated(state: FleetState = this.live): number {
    return state.generatedCount - state.removed.size;
  }

  private generatedIndexAt(ordinal: number, state: FleetState = this.live): number {
    if (state.removed.size === 0) return ordinal;
    if (!state.liveIndex) {
      const live = new Int32Array(this.liveGenerated(state));
      let at = 0;
      for (let i = 0; i < state.generatedCount; i++) if (!state.removed.has(i)) live[at++] = i;
      state.liveIndex = live;
    }
    return state.liveIndex[ordinal] as number;
  }

  private generated(index: number, state: FleetState = this.live): MachineRecord {
    const record = generateMachine(this.seed, index, this.epochMs);
    const patch = state.patches.get(index);
    return patch ? { ...record, ...patch, id: record.id } : record;
  }

  /** The device at position `ordinal` of the current listing order. */
  at(ordinal: number): MachineRecord | undefined {
    return this.atOf(this.live, ordinal);
  }

  private atOf(state: FleetState, ordinal: number): MachineRecord | undefined {
    if (ordinal < 0 || ordinal >= this.sizeOf(state)) return undefined;
    const liveGenerated = this.liveGenerated(state);
    if (ordinal < liveGenerated) return this.generated(this.generatedIndexAt(ordinal, state), state);
    return state.explicit[ordinal - liveGenerated];
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
    if (ordinal >= liveGenerated) return JSON.stringify(this.live.explicit[ordinal - liveGenerated]);
    const index = this.generatedIndexAt(ordinal);
    if (this.live.patches.has(index)) return JSON.stringify(this.generated(index));
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
   * The export rows of the device at `ordinal` of the snapshot served now, rendered by `render` (with the
   * snapshot's view, for its CVEs); none past its end. Kept for unpatched generated devices without a
   * vulnerability override while the budget lasts: their rows are the same in every snapshot.
   */
  rowsAt(ordinal: number, render: (record: MachineRecord, view: ExportView) => string[]): RenderedRows {
    return (this.exportView() as ExportView).rowsAt(ordinal, render);
  }

  private rowsOf(
    state: FleetState,
    view: ExportView,
    ordinal: number,
    render: (record: MachineRecord, view: ExportView) => string[],
  ): RenderedRows {
    const record = this.atOf(state, ordinal);
    if (!record) return toRenderedRows([]);
    const index = ordinal < this.liveGenerated(state) ? this.generatedIndexAt(ordinal, state) : -1;
    if (index < 0 || state.patches.has(index) || state.vulnOverrides.has(record.id))
      return toRenderedRows(render(record, view));
    const cached = this.rowsCache.get(index);
    if (cached !== undefined) return cached;
    const rows = toRenderedRows(render(record, view));
    if (this.rowsBudget.remaining > 0) {
      this.rowsBudget.remaining--;
      this.rowsCache.set(index, rows);
    }
    return rows;
  }

  /** Serialises every device and renders its export rows now, while the budgets last. */
  warm(render: (record: MachineRecord, view: ExportView) => string[]): void {
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

  private locate(
    id: string,
    state: FleetState = this.live,
  ): { index: number } | { explicitAt: number } | undefined {
    const index = indexOfMachineId(this.seed, id);
    if (index >= 0 && index < state.generatedCount && !state.removed.has(index)) return { index };
    const explicitAt = state.explicit.findIndex((r) => r.id === id);
    return explicitAt >= 0 ? { explicitAt } : undefined;
  }

  get(id: string): MachineRecord | undefined {
    const where = this.locate(id);
    if (!where) return undefined;
    return 'index' in where ? this.generated(where.index) : this.live.explicit[where.explicitAt];
  }

  /** Shallow-merges `patch` into a device; returns false when the id is unknown. */
  update(id: string, patch: Partial<MachineRecord>): boolean {
    const where = this.locate(id);
    if (!where) return false;
    const { id: _ignored, ...rest } = patch;
    if ('index' in where) {
      this.live.patches.set(where.index, { ...this.live.patches.get(where.index), ...rest });
      this.uncache(where.index);
    } else {
      // Replaced, not changed in place: the export snapshots hold the record as it was.
      const at = where.explicitAt;
      this.live.explicit[at] = { ...(this.live.explicit[at] as MachineRecord), ...rest };
    }
    this.regenerate();
    return true;
  }

  remove(id: string): boolean {
    const where = this.locate(id);
    if (!where) return false;
    if ('index' in where) {
      this.live.removed.add(where.index);
      this.live.patches.delete(where.index);
      this.uncache(where.index);
      this.live.liveIndex = null;
    } else this.live.explicit.splice(where.explicitAt, 1);
    this.live.vulnOverrides.delete(id);
    this.regenerate();
    return true;
  }

  /** Appends `count` newly generated devices; returns their ids. */
  addGenerated(count: number): string[] {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const index = this.live.generatedCount++;
      ids.push(generateMachine(this.seed, index, this.epochMs).id);
    }
    this.live.liveIndex = null;
    if (ids.length > 0) this.regenerate();
    // Explicit records keep their place after generated ones; ordinals beyond generated shift.
    return ids;
  }

  addRecord(record: MachineRecord): void {
    this.insertRecord(record);
    this.regenerate();
  }

  /** Adds an explicit record, leaving the export's generation to the caller. */
  private insertRecord(record: MachineRecord): void {
    if (!/^[0-9a-f]{40}$/i.test(record.id))
      throw new Error(`machine id must be 40 hex characters, got '${record.id}'`);
    if (this.locate(record.id)) throw new Error(`machine '${record.id}' already exists`);
    this.live.explicit.push({ ...record });
  }

  setVulnerabilities(id: string, vulns: readonly VulnerabilityRecord[]): boolean {
    const where = this.locate(id);
    if (!where) return false;
    if ('index' in where) this.uncache(where.index);
    this.live.vulnOverrides.set(
      id,
      vulns.map((v) => ({ ...v })),
    );
    this.regenerate();
    return true;
  }

  /** CVEs with the software they affect; undefined when the device is unknown. */
  cveEntries(id: string): CveEntryView[] | undefined {
    return this.cveEntriesOf(this.live, id);
  }

  /** The device's CVEs as its export rows list them now (see FleetSpec.multiProductCves). */
  exportEntries(id: string): CveEntryView[] | undefined {
    return this.exportEntriesOf(this.live, id);
  }

  private exportEntriesOf(state: FleetState, id: string): CveEntryView[] | undefined {
    const entries = this.cveEntriesOf(state, id);
    if (!entries || !this.multiProductCves) return entries;
    // A generated device's entries are the catalog's own; an override's are not and keep one row each.
    return entries.flatMap((entry) => [entry, ...((entry as Partial<CatalogEntry>).otherProducts ?? [])]);
  }

  private cveEntriesOf(state: FleetState, id: string): CveEntryView[] | undefined {
    const where = this.locate(id, state);
    if (!where) return undefined;
    const override = state.vulnOverrides.get(id);
    if (override) {
      const byId = catalogById();
      return override.map((v) => ({
        vulnerability: v,
        software: byId.get(v.id)?.software ?? UNKNOWN_SOFTWARE,
      }));
    }
    if ('explicitAt' in where) return [];
    return generateCveEntries(this.seed, where.index, this.onboardingOf(where.index, state), this.volume);
  }

  /**
   * The installed software a device lists in the export without a CVE; undefined under the light mix (the
   * export then gives one device in ten such a row, see deviceRowsJson).
   */
  softwareOnly(id: string): AffectedSoftware[] | undefined {
    return this.softwareOnlyOf(this.live, id);
  }

  private softwareOnlyOf(state: FleetState, id: string): AffectedSoftware[] | undefined {
    if (!this.volume) return undefined;
    const where = this.locate(id, state);
    if (!where || 'explicitAt' in where) return [];
    const onboarded = isOnboarded(this.onboardingOf(where.index, state));
    return softwareOnlyEntries(this.seed, where.index, onboarded, this.volume);
  }

  /** A patch may have set it to anything, a number or a boolean included (see isOnboarded). */
  private onboardingOf(index: number, state: FleetState): unknown {
    const patch = state.patches.get(index);
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
