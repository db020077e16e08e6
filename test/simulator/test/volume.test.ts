import { createHash } from 'node:crypto';
import type { FleetSpec } from '../src/fleet';
import { deviceRowsJson } from '../src/mde';
import { createTenant } from '../src/state';
import type { MachineRecord, SoftwareVulnerabilityRow } from '../src/types';
import { BASE_EXPORT_ROWS_PER_DEVICE } from '../src/volume';

const EPOCH = Date.UTC(2026, 0, 15, 12, 0, 0);

/** Every export row of a generated fleet, device by device, parsed. */
function exportOf(fleet: FleetSpec): { rows: SoftwareVulnerabilityRow[][]; text: string[] } {
  const tenant = createTenant({ azureTenantId: 'contoso.example', apps: [], fleet }, EPOCH);
  const text: string[] = [];
  const rows: SoftwareVulnerabilityRow[][] = [];
  for (let ordinal = 0; ordinal < tenant.fleet.size(); ordinal++) {
    const device = deviceRowsJson(tenant.fleet, tenant.fleet.at(ordinal) as MachineRecord);
    text.push(...device);
    rows.push(device.map((row) => JSON.parse(row) as SoftwareVulnerabilityRow));
  }
  return { rows, text };
}

describe('export volume per device', () => {
  test('a fleet without an export volume should render exactly the light mix the benchmark was taken with', () => {
    const { rows, text } = exportOf({ size: 3000, seed: 7 });
    // Rows and digest of this fleet's export as rendered before the volume could be set, but for the
    // "Unassigned" rbacGroupName of ungrouped devices (null then; 3,373 rows, 0.2 % of the bytes).
    expect(text).toHaveLength(17_671);
    expect(rows.flat().filter((row) => row.cveId === null)).toHaveLength(156);
    expect(
      createHash('sha256')
        .update(`${text.join('\n')}\n`)
        .digest('hex'),
    ).toBe('01cda3cbf5602f7d76290a6b8174e4fcfe8a163f324a87d97dd41224dfa2c6cb');
    const perDevice = text.length / 3000;
    expect(Math.abs(perDevice - BASE_EXPORT_ROWS_PER_DEVICE) / BASE_EXPORT_ROWS_PER_DEVICE).toBeLessThan(
      0.05,
    );
  });

  test('a fleet with an export volume should give its mean rows per device and share without a CVE', () => {
    const size = 1500;
    const { rows } = exportOf({ size, seed: 7, exportRowsPerDevice: 57, exportSoftwareOnlyShare: 0.5 });
    const all = rows.flat();
    expect(all.length / size).toBeGreaterThan(57 * 0.9);
    expect(all.length / size).toBeLessThan(57 * 1.1);
    const softwareOnly = all.filter((row) => row.cveId === null).length / all.length;
    expect(softwareOnly).toBeGreaterThan(0.45);
    expect(softwareOnly).toBeLessThan(0.55);
    // Microsoft's key: one row per device, software version and CVE.
    const keys = all.map((r) =>
      [r.deviceId, r.softwareVendor, r.softwareName, r.softwareVersion, r.cveId].join('|'),
    );
    expect(new Set(keys).size).toBe(keys.length);
    // Clean onboarded devices are listed too, by their installed software alone.
    expect(rows.some((device) => device.length > 0 && device.every((row) => row.cveId === null))).toBe(true);
    // Rows are about as large as Microsoft's (~1 KB each).
    const bytes = all.reduce((sum, row) => sum + JSON.stringify(row).length, 0) / all.length;
    expect(bytes).toBeGreaterThan(600);
    expect(bytes).toBeLessThan(1200);
  });

  test("a device's CVEs in the export should be those its per-device answer lists, scaled with the volume", () => {
    const spec = { size: 500, seed: 3, exportRowsPerDevice: 57, exportSoftwareOnlyShare: 0.5 };
    const tenant = createTenant({ azureTenantId: 'contoso.example', apps: [], fleet: spec }, EPOCH);
    const light = createTenant(
      { azureTenantId: 'contoso.example', apps: [], fleet: { size: 500, seed: 3 } },
      EPOCH,
    );
    let scaled = 0;
    let base = 0;
    for (let ordinal = 0; ordinal < 500; ordinal++) {
      const record = tenant.fleet.at(ordinal) as MachineRecord;
      const exported = deviceRowsJson(tenant.fleet, record)
        .map((row) => (JSON.parse(row) as SoftwareVulnerabilityRow).cveId)
        .filter((id): id is string => id !== null);
      const listed = (tenant.fleet.vulnerabilities(record.id) ?? []).map((v) => v.id);
      expect(exported.sort()).toEqual(listed.sort());
      scaled += listed.length;
      base += light.fleet.vulnerabilities(record.id)?.length ?? 0;
    }
    expect(scaled / base).toBeGreaterThan(4);
    expect(scaled / base).toBeLessThan(6);
  });

  test('an export volume out of range should be refused', () => {
    const tenant = (fleet: FleetSpec) => () =>
      createTenant({ azureTenantId: 'contoso.example', apps: [], fleet }, EPOCH);
    expect(tenant({ size: 1, exportRowsPerDevice: 0 })).toThrow(/exportRowsPerDevice/);
    expect(tenant({ size: 1, exportRowsPerDevice: 5_000 })).toThrow(/exportRowsPerDevice/);
    expect(tenant({ size: 1, exportSoftwareOnlyShare: 1 })).toThrow(/exportSoftwareOnlyShare/);
    expect(tenant({ size: 1, exportSoftwareOnlyShare: -0.1 })).toThrow(/exportSoftwareOnlyShare/);
  });
});

describe('CVEs affecting several products', () => {
  /** Per device, its CVEs listed on more than one row, with the products of those rows. */
  const repeated = (rows: SoftwareVulnerabilityRow[][]) =>
    rows.flatMap((device) => {
      const byCve = new Map<string, string[]>();
      for (const row of device)
        if (row.cveId !== null)
          byCve.set(row.cveId, [
            ...(byCve.get(row.cveId) ?? []),
            `${row.softwareVendor}/${row.softwareName}/${row.softwareVersion}`,
          ]);
      return [...byCve.values()].filter((products) => products.length > 1);
    });

  test('multiProductCves should list such a CVE once per product and version, as Microsoft does', () => {
    const plain = exportOf({ size: 300, seed: 7 });
    const multi = exportOf({ size: 300, seed: 7, multiProductCves: true });
    expect(repeated(plain.rows)).toEqual([]);
    const found = repeated(multi.rows);
    expect(found.length).toBeGreaterThan(10);
    for (const products of found) {
      expect(products.length).toBeLessThanOrEqual(3);
      expect(new Set(products).size).toBe(products.length);
    }
    // Only rows are added: every row of the plain export is still there, ids unique.
    const ids = multi.rows.flat().map((row) => row.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual(expect.arrayContaining(plain.rows.flat().map((row) => row.id)));
  });
});
