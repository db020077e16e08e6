import { Rng } from './rng';
import type { AffectedSoftware } from './types';

// How many rows the SoftwareVulnerabilitiesByMachine export holds per device. Microsoft lists one row per
// device, software version and CVE, and one per installed software version without a CVE, each ~1 KB; a
// Windows device a few monthly patches behind has tens to hundreds. Left unset, a generated fleet keeps its
// light mix (about 5.7 rows per device, 1 % of them without a CVE), which the benchmark's numbers were
// taken with; set, the volume of a heavier fleet can be measured with the same code.

/** Mean CVEs per device of a generated fleet (every device counted, the clean and not onboarded ones too). */
export const BASE_CVES_PER_DEVICE = 5.69;
/** Mean export rows per device of a generated fleet without an export volume (CVE rows and inventory rows). */
export const BASE_EXPORT_ROWS_PER_DEVICE = 5.74;
/** Share of onboarded devices among generated ones (the generator's onboarding weights). */
const ONBOARDED_SHARE = 0.9;
/** Most CVEs a device is given (the shared catalog holds 3,000). */
const MAX_CVES = 2_000;

export interface ExportVolumeSpec {
  /** Mean export rows per device of the fleet, every device counted. Default: the light mix. */
  exportRowsPerDevice?: number;
  /** Share of those rows without a CVE (installed software), 0–1. Default: the light mix's 1 %. */
  exportSoftwareOnlyShare?: number;
}

/** What an export volume does to each generated device. */
export interface ExportVolume {
  /** Factor on each vulnerable device's CVE count (also what its per-device answer lists). */
  cveScale: number;
  /** Mean inventory rows without a CVE of an onboarded device, clean or not. */
  softwareOnlyPerOnboarded: number;
}

/**
 * The volume a fleet spec asks for; undefined when it asks for none, and the fleet keeps the light mix
 * exactly. Throws on values out of range.
 */
export function exportVolumeOf(spec: ExportVolumeSpec | undefined): ExportVolume | undefined {
  const rows = spec?.exportRowsPerDevice;
  const share = spec?.exportSoftwareOnlyShare;
  if (rows === undefined && share === undefined) return undefined;
  if (rows !== undefined && (typeof rows !== 'number' || !Number.isFinite(rows) || rows <= 0 || rows > 1_000))
    throw new Error(`fleet.exportRowsPerDevice must be a number in (0, 1000], got ${String(rows)}`);
  if (share !== undefined && (typeof share !== 'number' || !(share >= 0 && share < 1)))
    throw new Error(`fleet.exportSoftwareOnlyShare must be a number in [0, 1), got ${String(share)}`);
  const total = rows ?? BASE_EXPORT_ROWS_PER_DEVICE;
  const softwareOnly = share ?? 0.01;
  return {
    cveScale: (total * (1 - softwareOnly)) / BASE_CVES_PER_DEVICE,
    softwareOnlyPerOnboarded: (total * softwareOnly) / ONBOARDED_SHARE,
  };
}

/** A vulnerable device's CVE count under `volume`: scaled, at least one, at most MAX_CVES. */
export function scaledCveCount(count: number, volume: ExportVolume | undefined): number {
  if (!volume || count === 0) return count;
  return Math.min(MAX_CVES, Math.max(1, Math.round(count * volume.cveScale)));
}

const VENDORS = [
  'microsoft',
  'google',
  'mozilla',
  'adobe',
  'oracle',
  'cisco',
  'citrix',
  'vmware',
  'zoom',
  'notepad++',
  'python',
  'git',
  'dell',
  'hp',
  'intel',
  'nvidia',
  'realtek',
  'igor_pavlov',
  'tableau',
  'autodesk',
];
const INVENTORY_SIZE = 4_000;
const INVENTORY_SEED = 0x1a7e_50f7;

let inventory: AffectedSoftware[] | undefined;

/** Installed software a device may list without a CVE: the same pool for every fleet and run. */
function softwareInventory(): readonly AffectedSoftware[] {
  if (inventory) return inventory;
  inventory = [];
  for (let i = 0; i < INVENTORY_SIZE; i++) {
    const rng = new Rng(INVENTORY_SEED, i);
    const vendor = rng.pick(VENDORS);
    inventory.push({
      vendor,
      name: `${vendor.replace(/[^a-z0-9]/g, '')}_product_${Math.floor(i / 4)}`,
      version: `${rng.int(1, 30)}.${rng.int(0, 20)}.${rng.int(0, 9999)}.${i % 4}`,
      recommendedSecurityUpdate: null,
      recommendedSecurityUpdateId: null,
    });
  }
  return inventory;
}

/**
 * The installed software generated device `index` lists without a CVE under `volume`: none when it is
 * not onboarded, otherwise a distinct draw from the shared inventory, 0 to twice the mean.
 */
export function softwareOnlyEntries(
  seed: number,
  index: number,
  onboarded: boolean,
  volume: ExportVolume,
): AffectedSoftware[] {
  if (!onboarded || volume.softwareOnlyPerOnboarded <= 0) return [];
  const pool = softwareInventory();
  const rng = new Rng(seed, index, 6);
  const count = Math.min(pool.length, Math.floor(rng.next() * (2 * volume.softwareOnlyPerOnboarded + 1)));
  const picked = new Set<number>();
  const out: AffectedSoftware[] = [];
  while (out.length < count) {
    const at = rng.int(0, pool.length - 1);
    if (picked.has(at)) continue;
    picked.add(at);
    out.push(pool[at] as AffectedSoftware);
  }
  return out;
}
