import { silentLogger } from '@urs/logging';
import { BulkRowReader, type BulkRowEntry, bulkRowEntry } from '../src/bulk-rows';
import { DefenderErrorCode } from '../src/errors';
import type { ApiCaller } from '../src/http';
import type { InvalidRecord } from '../src/machines';
import { ODataRowScanner } from '../src/odata-rows';
import { readCvss } from '@urs/contracts/vulnerabilities';
import { parseSoftwareVulnerabilityRow, parseVulnerability } from '../src/schema';
import { fetchMachineVulnerabilities, vulnerabilitiesByMachine } from '../src/vulnerabilities';

const UNREADABLE: unknown[] = [
  'high',
  'n/a',
  '9.8.1',
  '1e1',
  ' 0x5',
  '-1',
  'NaN',
  NaN,
  -0.1,
  10.1,
  11,
  Infinity,
  true,
  {},
  [],
];

describe('readCvss', () => {
  it('should read a number or numeric text from 0 to 10 as the score', () => {
    expect([0, 9.8, 10, '9.8', ' 7.5 ', '10', '0'].map(readCvss)).toEqual([0, 9.8, 10, 9.8, 7.5, 10, 0]);
  });

  it('should read null and absent as no v3 score', () => {
    expect([null, undefined].map(readCvss)).toEqual([null, null]);
  });

  it('should find non-numeric text, NaN, negative scores and scores above 10 unreadable', () => {
    for (const value of UNREADABLE) expect(readCvss(value)).toBeUndefined();
  });
});

describe('the score of a vulnerability, per device and in the export', () => {
  it('parseVulnerability should read numeric text as its number and skip a row whose cvssV3 is unreadable', () => {
    expect(parseVulnerability({ id: 'CVE-1', cvssV3: '9.8' })).toEqual({
      ok: true,
      value: { id: 'CVE-1', cvssV3: 9.8 },
    });
    for (const cvssV3 of UNREADABLE) expect(parseVulnerability({ id: 'CVE-1', cvssV3 }).ok).toBe(false);
  });

  it('parseSoftwareVulnerabilityRow should skip a row whose cvssScore is unreadable', () => {
    for (const cvssScore of UNREADABLE)
      expect(parseSoftwareVulnerabilityRow({ deviceId: 'd', cveId: 'CVE-1', cvssScore }).ok).toBe(false);
  });

  it('the export row reader should skip a row whose cvssScore is a number outside 0–10, as the whole parse does', () => {
    const rows = [11, -1, 10.5, 1e3].map((score) => `{"deviceId":"d1","cveId":"CVE-1","cvssScore":${score}}`);
    const entries: BulkRowEntry[] = [];
    const scanner = new ODataRowScanner((entry) => entries.push(entry), bulkRowEntry, new BulkRowReader());
    scanner.push(Buffer.from(`{"value":[${rows.join(',')}]}`));
    scanner.end();
    expect(entries.map((entry) => 'invalid' in entry)).toEqual([true, true, true, true]);
    // Each names its device, which had a row whose CVE is not known.
    expect(entries.map((entry) => entry.deviceId)).toEqual(['d1', 'd1', 'd1', 'd1']);
    expect(bulkRowEntry({ DeviceID: 'd2', cveId: 'CVE-1', cvssScore: 'high' })).toMatchObject({
      deviceId: 'd2',
    });
    expect(bulkRowEntry({ deviceId: 7, cveId: 'CVE-1', cvssScore: 'high' })).not.toHaveProperty('deviceId');
  });
});

describe('fetchMachineVulnerabilities and unreadable scores', () => {
  function answering(value: unknown[]): ApiCaller {
    return { get: async () => ({ status: 200, body: { value } }) } as unknown as ApiCaller;
  }
  const deps = (value: unknown[], invalid: InvalidRecord[]) => ({
    api: answering(value),
    logger: silentLogger,
    azureTenantId: 'tenant',
    onInvalidRecord: (record: InvalidRecord) => invalid.push(record),
  });

  it('should give the readable rows of a device that has some, reporting the others', async () => {
    const invalid: InvalidRecord[] = [];
    const list = await fetchMachineVulnerabilities(
      deps(
        [
          { id: 'CVE-1', cvssV3: 'high' },
          { id: 'CVE-2', cvssV3: 7.5 },
        ],
        invalid,
      ),
      'm1',
    );
    expect(list).toEqual([{ id: 'CVE-2', cvssV3: 7.5 }]);
    expect(invalid).toHaveLength(1);
  });

  it('should fail a device whose rows all are unreadable, not give it an empty list', async () => {
    const invalid: InvalidRecord[] = [];
    const call = fetchMachineVulnerabilities(
      deps(
        [
          { id: 'CVE-1', cvssV3: 'high' },
          { id: 'CVE-2', cvssV3: 11 },
        ],
        invalid,
      ),
      'm1',
    );
    await expect(call).rejects.toMatchObject({ code: DefenderErrorCode.UNREADABLE_RECORDS });
    expect(invalid).toHaveLength(2);
  });

  it('should give an empty list for a device without vulnerabilities', async () => {
    await expect(fetchMachineVulnerabilities(deps([], []), 'm1')).resolves.toEqual([]);
  });
});

describe('vulnerabilitiesByMachine and unreadable rows', () => {
  /** An API whose export is one page of `rows`, read as the client reads them. */
  function exporting(rows: unknown[]): ApiCaller {
    return {
      scanRows: async (
        _endpoint: unknown,
        _path: unknown,
        _params: unknown,
        onRow: (row: BulkRowEntry) => void,
        toRow: (row: unknown) => BulkRowEntry,
      ) => {
        for (const row of rows) onRow(toRow(row));
        return { status: 200, members: {} };
      },
    } as unknown as ApiCaller;
  }

  it('should count the rows it skips and give a device whose CVE rows all were unreadable null, not no CVE', async () => {
    const invalid: InvalidRecord[] = [];
    const read = await vulnerabilitiesByMachine({
      api: exporting([
        { deviceId: 'd1', cveId: 'CVE-1', cvssScore: '1e1' },
        { deviceId: 'd1', cveId: 'CVE-2', cvssScore: ' 0x5' },
        { deviceId: 'd2', cveId: 'CVE-3', cvssScore: 'high' },
        { deviceId: 'd2', cveId: 'cve-4', cvssScore: '9.8' },
        { deviceId: 'd3', cveId: null, cvssScore: null },
        // Installed software without a CVE beside a CVE row that could not be read: the CVEs are still unknown.
        { deviceId: 'd4', cveId: null, cvssScore: null },
        { deviceId: 'd4', cveId: 'CVE-5', cvssScore: 11 },
        { deviceId: 'd4', cveId: null, cvssScore: null },
        // ... but known once a CVE row could be read.
        { deviceId: 'd5', cveId: null, cvssScore: null },
        { deviceId: 'd5', cveId: 'CVE-6', cvssScore: 11 },
        { deviceId: 'd5', cveId: 'CVE-7', cvssScore: 7.5 },
      ]),
      logger: silentLogger,
      azureTenantId: 'tenant',
      onInvalidRecord: (record: InvalidRecord) => invalid.push(record),
    });
    expect(read.invalid).toBe(5);
    expect(invalid).toHaveLength(5);
    expect(read.devices).toEqual(
      new Map<string, unknown>([
        ['d1', null],
        ['d2', [expect.objectContaining({ id: 'CVE-4', cvssV3: 9.8 })]],
        ['d3', []],
        ['d4', null],
        ['d5', [expect.objectContaining({ id: 'CVE-7', cvssV3: 7.5 })]],
      ]),
    );
  });
});
