import { summariseVulnerabilities, type VulnerabilityLike } from '@urs/contracts/vulnerabilities';
import { VulnerabilityFolder } from '../src/summarise';

/** One export row as the fetcher sees it: a device and a CVE (null for a software-only row). */
interface Row {
  deviceId: string;
  cveId: string | null;
  cvss: number | null;
}

/** Each device's whole list (rows without a CVE list the device only). */
function byDevice(rows: readonly Row[]): Map<string, VulnerabilityLike[]> {
  const lists = new Map<string, VulnerabilityLike[]>();
  for (const row of rows) {
    let list = lists.get(row.deviceId);
    if (!list) {
      list = [];
      lists.set(row.deviceId, list);
    }
    if (row.cveId !== null) list.push({ id: row.cveId, cvssV3: row.cvss });
  }
  return lists;
}

/** The pre-folding result: every device's whole list summarised at once. */
function summariseWhole(rows: readonly Row[], threshold: number) {
  const whole = byDevice(rows);
  return new Map([...whole].map(([id, list]) => [id, summariseVulnerabilities(list, threshold)]));
}

/** The rows folded one by one, as the export hands them out. */
function folded(rows: readonly Row[], threshold: number) {
  const folder = new VulnerabilityFolder();
  for (const row of rows)
    folder.add(row.deviceId, row.cveId === null ? undefined : { id: row.cveId, cvssV3: row.cvss });
  return new Map(folder.summaries(threshold));
}

/**
 * The same rows in the orders an export may give them: as they are, each device's rows together,
 * reversed, and with the first `retried` rows given twice (a page that failed midway and was read again).
 */
function orders(rows: readonly Row[], retried: number[] = [1, Math.ceil(rows.length / 2)]): Row[][] {
  const grouped = [...rows].sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0));
  return [
    [...rows],
    grouped,
    [...rows].reverse(),
    ...retried.map((count) => [...rows.slice(0, count), ...rows]),
  ];
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
  it('should give the same summaries as summarising each device whole, whatever the order of the rows', () => {
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
    for (const order of orders(rows)) expect(folded(order, 7)).toEqual(expected);
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

  it('should give the same summaries as the whole list for many orders, retried prefixes and thresholds', () => {
    for (const seed of [1, 2, 3, 42]) {
      const rows = rowsFor(seed, 600);
      for (const threshold of [0, 7, 9]) {
        const expected = summariseWhole(rows, threshold);
        expect(expected.size).toBeGreaterThan(0);
        for (const order of orders(rows, [1, 7, 50, 599, 600])) {
          expect(folded(order, threshold)).toEqual(expected);
        }
      }
    }
  });

  it('should give the same summaries past the first room for pairs and runs (thousands of each)', () => {
    // 7 devices in random order: nearly every row starts a run, and holds a pair of its own.
    const rows = rowsFor(5, 4000);
    for (const threshold of [0, 9]) {
      const expected = summariseWhole(rows, threshold);
      for (const order of orders(rows, [3999])) expect(folded(order, threshold)).toEqual(expected);
    }
  });

  it('should keep at most ten top ids, highest first and ties by id, across runs of rows', () => {
    const rows: Row[] = Array.from({ length: 15 }, (_, i) => ({
      deviceId: 'a',
      cveId: `CVE-${String(i).padStart(2, '0')}`,
      cvss: i % 3 === 0 ? 9 : 5,
    }));
    // Another device's row in between: the device's CVEs come in two runs.
    const summary = folded(
      [...rows.slice(0, 4), { deviceId: 'b', cveId: 'CVE-00', cvss: 1 }, ...rows.slice(2)],
      9,
    ).get('a');
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
    for (const order of orders(rows)) {
      const summaries = folded(order, 4);
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

  it('should give the same summaries from its state taken over by another fold', () => {
    const rows = rowsFor(9, 3000);
    const folder = new VulnerabilityFolder();
    for (const row of rows)
      folder.add(row.deviceId, row.cveId === null ? undefined : { id: row.cveId, cvssV3: row.cvss });
    const taken = VulnerabilityFolder.from(structuredClone(folder.state()));
    expect(taken.size).toBe(folder.size);
    expect(new Map(taken.summaries(7))).toEqual(summariseWhole(rows, 7));
    // Rows folded after the take-over count as they would have in the first fold.
    const more = rowsFor(10, 2000);
    for (const row of more)
      taken.add(row.deviceId, row.cveId === null ? undefined : { id: row.cveId, cvssV3: row.cvss });
    expect(new Map(taken.summaries(7))).toEqual(summariseWhole([...rows, ...more], 7));
  });

  it('should give the same summaries when a score is not one decimal, before or after the take-over', () => {
    // The scores are kept in tenths until one does not fit (see ScoreColumn); the summaries never tell.
    const rows = rowsFor(11, 3000);
    const odd = (at: number, cvss: number): Row => ({ ...(rows[at] as Row), cveId: 'CVE-2026-7', cvss });
    const early = [...rows.slice(0, 1500), odd(1500, 7.25), ...rows.slice(1500)];
    for (const threshold of [0, 7.2, 7.25, 9])
      expect(folded(early, threshold)).toEqual(summariseWhole(early, threshold));
    const folder = new VulnerabilityFolder();
    for (const row of rows.slice(0, 2000))
      folder.add(row.deviceId, row.cveId === null ? undefined : { id: row.cveId, cvssV3: row.cvss });
    const taken = VulnerabilityFolder.from(structuredClone(folder.state()));
    const late = [...rows.slice(2000), odd(2500, 9.95), odd(2600, 42)];
    for (const row of late)
      taken.add(row.deviceId, row.cveId === null ? undefined : { id: row.cveId, cvssV3: row.cvss });
    expect(new Map(taken.summaries(7))).toEqual(summariseWhole([...rows.slice(0, 2000), ...late], 7));
  });

  it('should give null for a device whose CVE rows were all unreadable, and summarise one with a readable CVE row on it', () => {
    const folder = new VulnerabilityFolder();
    folder.add('a', null);
    folder.add('b', { id: 'CVE-9', cvssV3: 9.9 });
    folder.add('a', null);
    folder.add('b', null);
    // Installed software without a CVE says nothing of the CVE row that could not be read, before or after it.
    folder.add('c', null);
    folder.add('c', undefined);
    folder.add('e', undefined);
    folder.add('e', null);
    folder.add('e', undefined);
    // Software alone: no CVE.
    folder.add('f', undefined);
    // A readable CVE row on a later run.
    folder.add('g', null);
    folder.add('g', undefined);
    folder.add('a', null);
    folder.add('g', { id: 'CVE-8', cvssV3: 8 });
    const expected = new Map([
      ['a', null],
      ['b', summariseVulnerabilities([{ id: 'CVE-9', cvssV3: 9.9 }], 7)],
      ['c', null],
      ['e', null],
      ['f', summariseVulnerabilities([], 7)],
      ['g', summariseVulnerabilities([{ id: 'CVE-8', cvssV3: 8 }], 7)],
    ]);
    expect(new Map(folder.summaries(7))).toEqual(expected);
    expect(new Map([...expected.keys()].map((id) => [id, folder.summaryOf(id, 7)]))).toEqual(expected);
    expect(folder.summaryOf('d', 7)).toBeUndefined();
    expect(folder.size).toBe(6);
    const taken = VulnerabilityFolder.from(structuredClone(folder.state()));
    expect(new Map(taken.summaries(7))).toEqual(expected);
  });
});
