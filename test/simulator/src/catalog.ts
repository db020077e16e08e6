import { Rng } from './rng';
import type { AffectedSoftware, VulnerabilityRecord } from './types';

// A shared CVE catalog, identical for every tenant and every run (fixed seed), so fleets of many
// tenants draw from one realistic pool: CVSS v3 spread over 2.0–10.0, a minority with public exploits.

export interface CatalogEntry {
  vulnerability: VulnerabilityRecord;
  software: AffectedSoftware;
  /** `vulnerability` serialised once, so per-device answers are string joins. */
  json: string;
  /**
   * The same CVE on other products or versions (none for most; one or two for about one in eight), each
   * an entry of its own: a device with the CVE has one export row per product and version with
   * FleetSpec.multiProductCves.
   */
  otherProducts: CatalogEntry[];
}

/** Share of catalog CVEs that affect more than one product or version. */
const MULTI_PRODUCT_SHARE = 0.125;

const CATALOG_SIZE = 3000;
const CATALOG_SEED = 0x5eed_cafe;

const PRODUCTS: readonly (readonly [string, string, readonly string[]])[] = [
  ['microsoft', 'windows_10', ['10.0.19045.4291', '10.0.19045.3930']],
  ['microsoft', 'windows_11', ['10.0.22631.3447', '10.0.22621.2861']],
  ['microsoft', 'windows_server_2019', ['10.0.17763.5576']],
  ['microsoft', 'windows_server_2022', ['10.0.20348.2340']],
  ['microsoft', 'edge_chromium-based', ['123.0.2420.97', '120.0.2210.91']],
  ['microsoft', '.net_framework', ['4.8.4645.0', '4.8.9181.0']],
  ['microsoft', 'office', ['16.0.17328.20282']],
  ['google', 'chrome', ['124.0.6367.91', '119.0.6045.160']],
  ['mozilla', 'firefox', ['125.0.2', '115.9.1']],
  ['oracle', 'jre', ['8.0.4010.10', '11.0.22.0']],
  ['adobe', 'acrobat_reader_dc', ['23.8.20470.0']],
  ['7-zip', '7-zip', ['23.1.0.0']],
  ['openssl', 'openssl', ['3.0.2', '1.1.1f']],
  ['canonical', 'ubuntu_linux', ['22.04']],
  ['linux', 'linux_kernel', ['5.15.0-105', '6.5.0-28']],
  ['apple', 'macos', ['14.4.1']],
  ['videolan', 'vlc_media_player', ['3.0.18.0']],
  ['zoom', 'zoom', ['5.17.11']],
];

/** exploitTypes' possible values, as vulnerability.md lists them. */
const EXPLOIT_TYPES = ['Local privilege escalation', 'Denial of service', 'Local'];

function severityOf(cvss: number): string {
  if (cvss >= 9) return 'Critical';
  if (cvss >= 7) return 'High';
  if (cvss >= 4) return 'Medium';
  return 'Low';
}

function vectorFor(rng: Rng, cvss: number): string {
  const av = cvss >= 7 ? rng.pick(['N', 'N', 'A']) : rng.pick(['L', 'N', 'P']);
  const impact = cvss >= 7 ? 'H' : rng.pick(['L', 'H', 'N']);
  return `CVSS:3.1/AV:${av}/AC:${rng.pick(['L', 'H'])}/PR:${rng.pick(['N', 'L', 'H'])}/UI:${rng.pick(['N', 'R'])}/S:U/C:${impact}/I:${impact}/A:${rng.pick(['H', 'L', 'N'])}`;
}

function buildCatalog(): CatalogEntry[] {
  const entries: CatalogEntry[] = [];
  const used = new Set<string>();
  for (let i = 0; i < CATALOG_SIZE; i++) {
    const rng = new Rng(CATALOG_SEED, i);
    const year = rng.int(2016, 2025);
    let id = `CVE-${year}-${rng.int(1000, 49999)}`;
    while (used.has(id)) id = `CVE-${year}-${rng.int(1000, 49999)}`;
    used.add(id);
    // Bell-ish spread centred near 6.5, clamped to the 2.0–10.0 range real catalogs show.
    const raw = 2 + ((rng.next() + rng.next() + rng.next()) / 3) * 8 + (rng.next() - 0.5) * 2;
    const cvss = Math.round(Math.min(10, Math.max(2, raw)) * 10) / 10;
    const publishedMs = Date.UTC(year, rng.int(0, 11), rng.int(1, 28), rng.int(0, 23), rng.int(0, 59));
    const updatedMs = publishedMs + rng.int(0, 400) * 24 * 3600 * 1000;
    const publicExploit = rng.chance(cvss >= 7 ? 0.3 : 0.08);
    const exploitVerified = publicExploit && rng.chance(0.35);
    const exploitInKit = exploitVerified && rng.chance(0.3);
    const [vendor, product, versions] = rng.pick(PRODUCTS);
    const kb = vendor === 'microsoft' && rng.chance(0.8) ? String(rng.int(5000000, 5039999)) : null;
    const epss = rng.chance(0.05) ? null : Math.round(rng.next() ** 4 * 100000) / 100000;
    entries.push({
      vulnerability: {
        id,
        name: id,
        description: `${severityOf(cvss)} severity vulnerability in ${product.replace(/_/g, ' ')} allows ${rng.pick(
          [
            'remote code execution',
            'elevation of privilege',
            'information disclosure',
            'denial of service',
            'security feature bypass',
          ],
        )}.`,
        severity: severityOf(cvss),
        cvssV3: cvss,
        cvssVector: vectorFor(rng, cvss),
        exposedMachines: rng.int(1, 5000),
        publishedOn: new Date(publishedMs).toISOString().replace('.000Z', 'Z'),
        updatedOn: new Date(updatedMs).toISOString().replace('.000Z', 'Z'),
        firstDetected: null,
        publicExploit,
        exploitVerified,
        exploitInKit,
        exploitTypes: publicExploit ? [rng.pick(EXPLOIT_TYPES)] : [],
        exploitUris: publicExploit ? [`https://www.exploit-db.com/exploits/${rng.int(10000, 52000)}`] : [],
        CveSupportability: rng.weighted([
          ['Supported', 92],
          ['Not Supported', 5],
          ['SupportedInPremium', 3],
        ] as const),
        epss,
      },
      software: {
        vendor,
        name: product,
        version: rng.pick(versions),
        recommendedSecurityUpdate: kb ? `April 2024 Security Updates` : null,
        recommendedSecurityUpdateId: kb,
      },
      json: '',
      otherProducts: [],
    });
  }
  entries.forEach((entry, index) => {
    entry.json = JSON.stringify(entry.vulnerability);
    entry.otherProducts = otherProducts(entry, index);
  });
  return entries;
}

/**
 * The other products or versions `entry`'s CVE affects, drawn from a stream of their own (stream 1), so
 * every other value of the catalog stays as it was.
 */
function otherProducts(entry: CatalogEntry, index: number): CatalogEntry[] {
  const rng = new Rng(CATALOG_SEED, index, 1);
  if (!rng.chance(MULTI_PRODUCT_SHARE)) return [];
  const { vendor, name, version } = entry.software;
  const same = PRODUCTS.find(([v, p]) => v === vendor && p === name);
  // Another version of the same product where it has one (Chrome 124 and 119), else other products of its vendor.
  const candidates: [string, string, string][] = [
    ...(same?.[2] ?? [])
      .filter((other) => other !== version)
      .map((other) => [vendor, name, other] as [string, string, string]),
    ...PRODUCTS.filter(([v, p]) => v === vendor && p !== name).map(
      ([v, p, versions]) => [v, p, versions[0] as string] as [string, string, string],
    ),
  ];
  const count = Math.min(candidates.length, rng.chance(0.5) ? 1 : 2);
  return candidates.slice(0, count).map(([v, p, other]) => ({
    vulnerability: entry.vulnerability,
    software: { ...entry.software, vendor: v, name: p, version: other },
    json: entry.json,
    otherProducts: [],
  }));
}

let catalog: CatalogEntry[] | undefined;

/** The shared catalog, built on first use (a few milliseconds). */
export function cveCatalog(): readonly CatalogEntry[] {
  catalog ??= buildCatalog();
  return catalog;
}
