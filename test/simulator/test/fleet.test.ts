import { Fleet, toRenderedRows } from '../src/fleet';
import { generateMachine, indexOfMachineId, machineIdFor } from '../src/generator';
import { mdeDate } from '../src/rng';
import type { MachineRecord } from '../src/types';

const EPOCH = Date.UTC(2026, 0, 15, 12, 0, 0);

describe('generateMachine', () => {
  test('generateMachine should be deterministic for a seed and index and differ across seeds', () => {
    expect(generateMachine(5, 42, EPOCH)).toEqual(generateMachine(5, 42, EPOCH));
    expect(generateMachine(5, 42, EPOCH).id).not.toBe(generateMachine(6, 42, EPOCH).id);
  });

  test('indexOfMachineId should invert machineIdFor and reject ids of other fleets', () => {
    for (const index of [0, 1, 99_999, 123_456])
      expect(indexOfMachineId(9, machineIdFor(9, index))).toBe(index);
    expect(indexOfMachineId(10, machineIdFor(9, 5))).toBe(-1);
    expect(indexOfMachineId(9, 'not-an-id')).toBe(-1);
  });
});

describe('mdeDate', () => {
  test('mdeDate should match ISO 8601 with seven fractional digits', () => {
    for (const ms of [0, Date.UTC(2024, 1, 29, 23, 59, 59, 999), Date.UTC(1999, 11, 31), 1_732_600_000_123]) {
      expect(mdeDate(ms, 42)).toBe(`${new Date(ms).toISOString().slice(0, 23)}0042Z`);
    }
  });
});

describe('Fleet', () => {
  test('a 100,000-device fleet should serve its last page and find devices by id without materialising', () => {
    const fleet = new Fleet('tenant-a', { size: 100_000, seed: 3 }, undefined, EPOCH);
    expect(fleet.size()).toBe(100_000);
    const last = fleet.slice(99_990, 10_000);
    expect(last).toHaveLength(10);
    expect(fleet.get(last[9]?.id as string)).toEqual(last[9]);
  });

  test('fleet mixes should be realistic: mostly onboarded and active, some High risk, CVSS spread', () => {
    const fleet = new Fleet('tenant-b', { size: 4000, seed: 11 }, undefined, EPOCH);
    const all = fleet.all();
    const share = (pred: (m: (typeof all)[number]) => boolean) => all.filter(pred).length / all.length;
    expect(share((m) => m.onboardingStatus === 'Onboarded')).toBeGreaterThan(0.8);
    expect(share((m) => m.onboardingStatus === 'CanBeOnboarded')).toBeGreaterThan(0.01);
    expect(share((m) => m.healthStatus === 'Active')).toBeGreaterThan(0.5);
    expect(share((m) => m.riskScore === 'High')).toBeGreaterThan(0.05);
    expect(
      share((m) => m.defenderAvStatus === undefined || m.defenderAvStatus === 'NotSupported'),
    ).toBeGreaterThan(0.5);
    expect(share((m) => m.defenderAvStatus === 'Disabled')).toBeGreaterThan(0);
    expect(
      share((m) => m.mergedIntoMachineId !== null && m.mergedIntoMachineId !== undefined),
    ).toBeGreaterThan(0);
    expect(share((m) => m.isExcluded === true)).toBeGreaterThan(0);
    const ages = all.map((m) => EPOCH - Date.parse(m.lastSeen as string));
    expect(Math.min(...ages)).toBeLessThan(3600_000);
    expect(Math.max(...ages)).toBeGreaterThan(30 * 24 * 3600_000);
    const cvss = all.flatMap((m) => (fleet.vulnerabilities(m.id) ?? []).map((v) => v.cvssV3 as number));
    expect(Math.min(...cvss)).toBeLessThan(3);
    expect(Math.max(...cvss)).toBeGreaterThan(9.5);
  });

  test('remove, add and update should change listing order, size and lookups consistently', () => {
    const fleet = new Fleet('tenant-c', { size: 10, seed: 1 }, undefined, EPOCH);
    const ids = fleet.all().map((m) => m.id);
    fleet.remove(ids[2] as string);
    expect(fleet.all().map((m) => m.id)).toEqual([...ids.slice(0, 2), ...ids.slice(3)]);
    expect(fleet.get(ids[2] as string)).toBeUndefined();
    const [added] = fleet.addGenerated(1);
    expect(fleet.at(9)?.id).toBe(added);
    fleet.update(ids[0] as string, { onboardingStatus: 'CanBeOnboarded' });
    expect(fleet.get(ids[0] as string)?.onboardingStatus).toBe('CanBeOnboarded');
    expect(fleet.vulnerabilities(ids[0] as string)).toEqual([]);
    const explicit = { id: 'f'.repeat(40), computerDnsName: 'manual.contoso.com' };
    fleet.addRecord(explicit);
    expect(fleet.at(fleet.size() - 1)).toEqual(explicit);
    expect(() => fleet.addRecord({ id: 'bad' })).toThrow('machine id must be 40 hex characters');
  });

  test('jsonAt should serve cached JSON within the budget and never a stale record after a change', () => {
    const budget = { remaining: 5 };
    const fleet = new Fleet('tenant-d', { size: 8, seed: 2 }, undefined, EPOCH, budget);
    const pages = fleet.sliceJson(0, 8);
    expect(pages.map((j) => JSON.parse(j) as unknown)).toEqual(JSON.parse(JSON.stringify(fleet.all())));
    expect(budget.remaining).toBe(0);
    const id = fleet.at(1)?.id as string;
    fleet.update(id, { riskScore: 'High', healthStatus: 'Inactive' });
    expect(budget.remaining).toBe(1);
    expect(JSON.parse(fleet.jsonAt(1) as string)).toMatchObject({
      id,
      riskScore: 'High',
      healthStatus: 'Inactive',
    });
    fleet.remove(fleet.at(0)?.id as string);
    expect(budget.remaining).toBe(2);
    expect(JSON.parse(fleet.jsonAt(0) as string)).toMatchObject({ id, riskScore: 'High' });
    fleet.dispose();
    expect(budget.remaining).toBe(5);
  });

  test('warm should render every device within the budgets, and a change should never serve stale rows', () => {
    const records = { remaining: 100 };
    const exports = { remaining: 6 };
    const fleet = new Fleet('tenant-e', { size: 8, seed: 3 }, undefined, EPOCH, records, exports);
    let rendered = 0;
    // Rows name the device's health and its CVE ids, so a stale cache entry would show.
    const render = (record: MachineRecord): string[] => {
      rendered++;
      const cves = fleet.vulnerabilities(record.id) ?? [];
      return [JSON.stringify({ id: record.id, health: record.healthStatus, cves: cves.map((c) => c.id) })];
    };
    const rowOf = (ordinal: number) => JSON.parse(fleet.rowsAt(ordinal, render).bytes.toString('utf8'));
    fleet.warm(render);
    expect([rendered, records.remaining, exports.remaining]).toEqual([8, 92, 0]);
    expect(rowOf(5).id).toBe(fleet.at(5)?.id);
    expect(rendered).toBe(8);

    const id = fleet.at(1)?.id as string;
    fleet.update(id, { healthStatus: 'Inactive' });
    expect(rowOf(1)).toMatchObject({ id, health: 'Inactive' });
    const other = fleet.at(2)?.id as string;
    const [cve] = fleet.vulnerabilities(fleet.at(3)?.id as string) ?? [];
    fleet.setVulnerabilities(other, cve ? [cve] : []);
    expect(rowOf(2).cves).toEqual(cve ? [cve.id] : []);
    fleet.remove(fleet.at(0)?.id as string);
    expect(rowOf(0).id).toBe(id);
    // Rows span devices by their starts: a device of two rows is cut between them.
    expect(toRenderedRows(['{"a":1}', '{"b":"é"}'])).toEqual({
      bytes: Buffer.from('{"a":1},{"b":"é"}'),
      starts: [0, 8],
    });
    fleet.dispose();
    expect([records.remaining, exports.remaining]).toEqual([100, 6]);
  });

  test('generatedAtMs should start at epochMs and move strictly on every change of the exported data, never on a read', () => {
    const explicit = { id: 'e'.repeat(40), computerDnsName: 'manual.contoso.com' };
    const fleet = new Fleet('tenant-f', { size: 6, seed: 4 }, [explicit], EPOCH);
    // The records a fleet starts with belong to its first snapshot.
    expect(fleet.generatedAtMs).toBe(EPOCH);
    const render = (record: MachineRecord): string[] => [JSON.stringify(record)];
    fleet.warm(render);
    fleet.all();
    fleet.sliceJson(0, 6);
    fleet.rowsAt(2, render);
    fleet.vulnerabilitiesJson(fleet.at(0)?.id as string);
    expect(fleet.generatedAtMs).toBe(EPOCH);

    const ids = fleet.all().map((m) => m.id);
    const [cve] = fleet.vulnerabilities(ids[1] as string) ?? [];
    const changes: Array<[string, () => unknown]> = [
      ['update', () => fleet.update(ids[0] as string, { osPlatform: 'Linux' })],
      ['update of an explicit record', () => fleet.update(explicit.id, { computerDnsName: 'x' })],
      ['setVulnerabilities', () => fleet.setVulnerabilities(ids[2] as string, cve ? [cve] : [])],
      ['remove', () => fleet.remove(ids[3] as string)],
      ['addGenerated', () => fleet.addGenerated(2)],
      ['addRecord', () => fleet.addRecord({ id: 'd'.repeat(40) })],
    ];
    // Frozen clock: changes within one millisecond still make distinct snapshots.
    const now = jest.spyOn(Date, 'now').mockReturnValue(EPOCH + 5_000);
    try {
      let previous = fleet.generatedAtMs;
      for (const [name, change] of changes) {
        change();
        const moved = fleet.generatedAtMs;
        expect({ name, moved: moved > previous, atLeastNow: moved >= EPOCH + 5_000 }).toEqual({
          name,
          moved: true,
          atLeastNow: true,
        });
        previous = moved;
      }
      expect(previous).toBe(EPOCH + 5_000 + changes.length - 1);
      // Changes that change nothing leave the snapshot as it is.
      expect(fleet.update('0'.repeat(40), { osPlatform: 'Linux' })).toBe(false);
      expect(fleet.remove('0'.repeat(40))).toBe(false);
      expect(fleet.setVulnerabilities('0'.repeat(40), [])).toBe(false);
      expect(fleet.addGenerated(0)).toEqual([]);
      expect(() => fleet.addRecord({ id: 'd'.repeat(40) })).toThrow('already exists');
      expect(fleet.generatedAtMs).toBe(previous);
    } finally {
      now.mockRestore();
    }
    // With the clock running, a change takes the current time.
    const before = Date.now();
    fleet.update(ids[0] as string, { osPlatform: 'Windows11' });
    expect(fleet.generatedAtMs).toBeGreaterThanOrEqual(before);
  });

  test('exportSnapshotMs should keep changes made within it out of the export until the first read after it', () => {
    const now = jest.spyOn(Date, 'now').mockReturnValue(EPOCH + 1_000);
    try {
      const fleet = new Fleet('tenant-s', { size: 2, seed: 4, exportSnapshotMs: 60_000 }, [], EPOCH);
      const render = (record: MachineRecord): string[] => [record.id];
      const exported = (): string[] =>
        Array.from({ length: fleet.exportView()!.size() }, (_, n) =>
          fleet.rowsAt(n, render).bytes.toString(),
        ).filter((rows) => rows !== '');
      const [first, second] = fleet.all().map((m) => m.id);
      const added = fleet.addGenerated(1)[0] as string;
      fleet.addRecord({ id: 'd'.repeat(40) });
      // Still the snapshot of EPOCH: the new devices are listed, not exported.
      expect(fleet.size()).toBe(4);
      expect(fleet.generatedAtMs).toBe(EPOCH);
      expect(exported()).toEqual([first, second]);
      expect(fleet.get(added)).toBeDefined();
      // A removal waits for the next snapshot too: listed no more, still exported.
      fleet.remove(second as string);
      expect([fleet.size(), fleet.generatedAtMs, exported()]).toEqual([3, EPOCH, [first, second]]);

      now.mockReturnValue(EPOCH + 60_000);
      expect(exported()).toEqual([first, added, 'd'.repeat(40)]);
      expect(fleet.generatedAtMs).toBe(EPOCH + 60_000);
      // A read with no change waiting makes no generation; a change long after the last one makes one at once.
      now.mockReturnValue(EPOCH + 200_000);
      expect(fleet.generatedAtMs).toBe(EPOCH + 60_000);
      fleet.addRecord({ id: 'c'.repeat(40) });
      expect(fleet.generatedAtMs).toBe(EPOCH + 200_000);
      expect(exported()).toContain('c'.repeat(40));
    } finally {
      now.mockRestore();
    }
  });
});
