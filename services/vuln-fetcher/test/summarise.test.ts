import { VulnerabilityFolder, summariseVulnerabilities, type VulnerabilityLike } from '../src/summarise';

/** One export row as the fetcher sees it: a device and a CVE (null for a software-only row). */
interface Row {
  deviceId: string;
  cveId: string | null;
  cvss: number | null;
}

/** Groups rows into one page the way the Defender client does (rows without a CVE list the device only). */
function pageOf(rows: readonly Row[]): Map<string, VulnerabilityLike[]> {
  const page = new Map<string, VulnerabilityLike[]>();
  for (const row of rows) {
    let list = page.get(row.deviceId);
    if (!list) {
      list = [];
      page.set(row.deviceId, list);
    }
    if (row.cveId !== null) list.push({ id: row.cveId, cvssV3: row.cvss });
  }
  return page;
}

/** The pre-folding result: every device's whole list summarised at once. */
function summariseWhole(rows: readonly Row[], threshold: number) {
  const whole = pageOf(rows);
  return new Map([...whole].map(([id, list]) => [id, summariseVulnerabilities(list, threshold)]));
}

function folded(rows: readonly Row[], pageSize: number, threshold: number) {
  const folder = new VulnerabilityFolder();
  for (let at = 0; at < rows.length; at += pageSize) folder.addPage(pageOf(rows.slice(at, at + pageSize)));
  return new Map(folder.summaries(threshold));
}

/** Deterministic pseudo-random rows: a few devices, repeated CVEs, null CVEs and null scores. */
function rowsFor(seed: number, count: number): Row[] {
  let state = seed;
  const next = (n: number) => {
    state = (state * 1_103_515_245 + 12_345) % 2_147_483_648;
    return state % n;
  };
  const rows: Row[] = [];
  for (let i = 0; i < count; i++) {
    const kind = next(10);
    rows.push({
      deviceId: `dev-${next(7)}`,
      cveId: kind === 0 ? null : `CVE-2026-${next(25)}`,
      cvss: kind === 1 ? null : next(101) / 10,
    });
  }
  return rows;
}

describe('VulnerabilityFolder', () => {
  it('should give the same summaries as summarising each device whole when rows span pages', () => {
    const rows: Row[] = [
      { deviceId: 'a', cveId: 'CVE-1', cvss: 5 },
      { deviceId: 'a', cveId: null, cvss: null },
      { deviceId: 'b', cveId: null, cvss: null },
      { deviceId: 'a', cveId: 'CVE-1', cvss: 9.8 },
      { deviceId: 'a', cveId: 'CVE-2', cvss: null },
      { deviceId: 'c', cveId: 'CVE-3', cvss: 7 },
      { deviceId: 'a', cveId: 'CVE-1', cvss: 4 },
      { deviceId: 'c', cveId: 'CVE-3', cvss: 7.5 },
      { deviceId: 'c', cveId: 'CVE-4', cvss: 7 },
    ];
    const expected = summariseWhole(rows, 7);
    for (const pageSize of [1, 2, 3, 4, rows.length]) {
      expect(folded(rows, pageSize, 7)).toEqual(expected);
    }
    expect(expected.get('a')).toEqual({
      criticalCveCount: 1,
      totalCveCount: 2,
      maxCvss: 9.8,
      cvssThreshold: 7,
      topCveIds: ['CVE-1', 'CVE-2'],
    });
    expect(expected.get('b')).toEqual({
      criticalCveCount: 0,
      totalCveCount: 0,
      maxCvss: null,
      cvssThreshold: 7,
      topCveIds: [],
    });
    expect(expected.get('c')).toMatchObject({ criticalCveCount: 2, totalCveCount: 2, maxCvss: 7.5 });
  });

  it('should give the same summaries as the whole list for many page splits and thresholds', () => {
    for (const seed of [1, 2, 3, 42]) {
      const rows = rowsFor(seed, 600);
      for (const threshold of [0, 7, 9]) {
        const expected = summariseWhole(rows, threshold);
        expect(expected.size).toBeGreaterThan(0);
        for (const pageSize of [1, 7, 50, 599, 600]) {
          expect(folded(rows, pageSize, threshold)).toEqual(expected);
        }
      }
    }
  });

  it('should keep at most ten top ids, highest first and ties by id, across pages', () => {
    const rows: Row[] = Array.from({ length: 15 }, (_, i) => ({
      deviceId: 'a',
      cveId: `CVE-${String(i).padStart(2, '0')}`,
      cvss: i % 3 === 0 ? 9 : 5,
    }));
    const summary = folded(rows, 4, 9).get('a');
    expect(summary?.topCveIds).toEqual([
      'CVE-00',
      'CVE-03',
      'CVE-06',
      'CVE-09',
      'CVE-12',
      'CVE-01',
      'CVE-02',
      'CVE-04',
      'CVE-05',
      'CVE-07',
    ]);
    expect(summary).toMatchObject({ criticalCveCount: 5, totalCveCount: 15, maxCvss: 9 });
  });

  it("should keep each device's own best score for a CVE that several devices share", () => {
    const rows: Row[] = [
      { deviceId: 'a', cveId: 'CVE-9', cvss: 9.9 },
      { deviceId: 'b', cveId: 'CVE-9', cvss: 3 },
      { deviceId: 'b', cveId: 'CVE-8', cvss: null },
      { deviceId: 'a', cveId: 'CVE-9', cvss: 1 },
      { deviceId: 'b', cveId: 'CVE-9', cvss: 4.2 },
    ];
    for (const pageSize of [1, 2, 5]) {
      const summaries = folded(rows, pageSize, 4);
      expect(summaries.get('a')).toMatchObject({ criticalCveCount: 1, totalCveCount: 1, maxCvss: 9.9 });
      expect(summaries.get('b')).toEqual({
        criticalCveCount: 1,
        totalCveCount: 2,
        maxCvss: 4.2,
        cvssThreshold: 4,
        topCveIds: ['CVE-9', 'CVE-8'],
      });
    }
  });
});
