import { BulkRowReader, type BulkRowEntry, bulkRowEntry } from '../src/bulk-rows';
import { ODataRowScanner } from '../src/odata-rows';

const CHUNK_SIZES = [1, 7, 100, 1000, 1 << 20];

/** A row as the export sends it (documented key order, a Windows path with escapes). */
function exportRow(
  deviceId: string,
  cveId: string | null,
  cvssScore: number | null,
  level = 'NoExploit',
): string {
  return JSON.stringify({
    id: `${deviceId}_microsoft_edge_1.2_${cveId ?? ''}`,
    deviceId,
    rbacGroupName: 'Servers',
    deviceName: `${deviceId}.contoso.com`,
    osPlatform: 'Windows11',
    osVersion: '22H2',
    osArchitecture: 'x64',
    lastSeenTimestamp: '2024-01-10 11:00:00',
    firstSeenTimestamp: '2023-01-10 11:00:00',
    softwareVendor: 'microsoft',
    softwareName: 'edge',
    softwareVersion: '1.2',
    cveId,
    vulnerabilitySeverityLevel: cveId ? 'High' : null,
    recommendedSecurityUpdate: null,
    recommendedSecurityUpdateId: 'KB123',
    recommendedSecurityUpdateUrl: 'https://support.microsoft.com/help/KB123',
    diskPaths: ['C:\\Program Files\\microsoft\\edge\\edge.exe'],
    registryPaths: ['HKEY_LOCAL_MACHINE\\SOFTWARE\\microsoft\\edge'],
    exploitabilityLevel: level,
    recommendationReference: 'va-_-microsoft-_-edge',
    securityUpdateAvailable: true,
    cvssScore,
  });
}

/** Rows that are valid JSON but unusual in a way the byte reader must read, or decline to the whole parse. */
const UNUSUAL_ROWS = [
  '{"deviceId":"d1","cveId":"","cvssScore":5}',
  '{"deviceId":"d1","cveId":"cve-2024-1234","cvssScore":9.8}',
  '{"deviceId":"d1","cveId":"CVE-1","cvssScore":-0}',
  '{"deviceId":"d1","cveId":"CVE-1","cvssScore":1e1}',
  '{"deviceId":"d1","cveId":"CVE-1","cvssScore":7.50}',
  '{"deviceId":"d1","cveId":"CVE-1","cvssScore":0.1}',
  '{"deviceId":"d1","cveId":"CVE-1","cvssScore":1.0000000000000002}',
  '{"deviceId":"d1","cveId":"CVE-1","cvssScore":12345678901234567890}',
  '{"deviceId":"d1","cveId":"CVE-1","cvssScore":-2.5E-3}',
  '{"deviceId":"d1","cveId":"CVE-1","cvssScore":"9.8"}',
  '{"deviceId":"d1","cveId":"CVE-1","cvssScore":true}',
  '{"deviceId":"d1","cveId":"CVE-1","vulnerabilitySeverityLevel":"high","exploitabilityLevel":"exploitisinkit"}',
  '{"deviceId":"d1","cveId":"CVE-1","vulnerabilitySeverityLevel":"Unknown","exploitabilityLevel":""}',
  '{"deviceId":"d1","cveId":"CVE-1","vulnerabilitySeverityLevel":5}',
  '{"deviceId":"d1","cveId":"CVE-1","exploitabilityLevel":"ExploitIsVerified"}',
  '{"deviceId":"d1","cveId":"CVE-1","exploitabilityLevel":"ExploitIsPublic","cvssScore":null}',
  '{"cveId":"CVE-1","cvssScore":5}',
  '{"deviceId":"","cveId":"CVE-1"}',
  '{"deviceId":5,"cveId":"CVE-1"}',
  '{"deviceId":null,"cveId":"CVE-1"}',
  '{"deviceId":"d\\u0041","cveId":"CVE-\\u0031","cvssScore":4}',
  '{"deviceId":"dévice","cveId":"CVE-é","cvssScore":4}',
  '{"deviceId":"a\\\\b","cveId":"CVE-1"}',
  '{"DeviceId":"d2","cveId":"CVE-1","cvssScore":3}',
  '{"deviceId":"d2","DEVICEID":"d3","cveId":"CVE-1"}',
  '{"deviceId":"d2","cveId":"CVE-1","cveId":"CVE-2","cvssScore":3}',
  '{"deviceId":"d2","cve\\u0049d":"CVE-1","cvssScore":3}',
  '{"deviceId":"d2","cveid":"CVE-1","CvssScore":3}',
  '{"@odata.type":"#row","deviceId":"d2","cveId":"CVE-1","cvssScore":3}',
  '{"__proto__":{"deviceId":"x"},"cveId":"CVE-1","cvssScore":3}',
  '{"deviceId":"d2","nested":{"deviceId":"x"},"cveId":"CVE-9","cvssScore":3}',
  '{"deviceId":"d2","deep":[[[[[[[[[[1]]]]]]]]]],"cveId":"CVE-9","cvssScore":3}',
  '{"deviceId":"d2","mixed":[1,-2.5e+3,true,false,null,"x\\"y",[]],"cveId":"CVE-8","cvssScore":3}',
  '{"deviceId":"d2","text":"Zoë – 東京 😀 \\ud83d\\ude00 \\/ \\b\\f\\n\\r\\t","cveId":"CVE-7","cvssScore":3}',
  '{\n  "deviceId" : "d3" ,\n\t"cveId":\r"CVE-1" , "cvssScore" : 6.1\n}',
  '{}',
  '42',
  '"a string row"',
  '[1,2]',
  'null',
];

/** Rows that are not valid JSON: the page fails, with the same error either way. */
const MALFORMED_ROWS = [
  '{"deviceId":"d1","cveId":"CVE-1",}',
  '{"deviceId":"d1","cveId":"CVE-1"} x',
  '{"deviceId":"d1","cveId":"CVE-1"}{}',
  '{"deviceId":"d1" "cveId":"CVE-1"}',
  '{"deviceId":"d1","cvssScore":01}',
  '{"deviceId":"d1","cvssScore":1.}',
  '{"deviceId":"d1","cvssScore":.5}',
  '{"deviceId":"d1","cvssScore":-}',
  '{"deviceId":"d1","cvssScore":1e}',
  '{"deviceId":"d1","flag":tru}',
  '{"deviceId":"d1","flag":nul}',
  '{"deviceId":"d1","text":"tab\tinside"}',
  '{"deviceId":"d1","text":"bad \\x escape"}',
  '{"deviceId":"d1","text":"bad \\u12G4 escape"}',
  '{"deviceId":"d1","list":[1,]}',
  '{"deviceId":"d1","list":[1 2]}',
  "{'deviceId':'d1'}",
  '{deviceId:"d1"}',
];

function page(rows: readonly string[]): string {
  return `{"@odata.context":"https://api.example/$metadata","value":[${rows.join(',')}],"@odata.nextLink":"https://api.example/next"}`;
}

/**
 * The entries of `text` cut into chunks of `size` bytes, read with or without the byte reader; `parsed`
 * counts the rows parsed whole.
 */
function scan(text: string, size: number, reader?: BulkRowReader, parsed = { rows: 0 }): BulkRowEntry[] {
  const rows: BulkRowEntry[] = [];
  const toRow = (raw: unknown): BulkRowEntry => {
    parsed.rows++;
    return bulkRowEntry(raw);
  };
  const scanner = new ODataRowScanner<BulkRowEntry>((row) => rows.push(row), toRow, reader);
  const bytes = Buffer.from(text, 'utf8');
  for (let at = 0; at < bytes.length; at += size) scanner.push(bytes.subarray(at, at + size));
  expect(scanner.end().members['@odata.nextLink']).toBe('https://api.example/next');
  return rows;
}

function thrown(action: () => unknown): string {
  try {
    action();
  } catch (error) {
    return `${(error as Error).constructor.name}: ${(error as Error).message}`;
  }
  return 'nothing thrown';
}

describe('BulkRowReader', () => {
  const usual: string[] = [];
  for (let device = 0; device < 30; device++) {
    for (let cve = 0; cve < 5; cve++)
      usual.push(
        exportRow(`device-${device}`, `CVE-2024-${1000 + ((device * 7 + cve) % 13)}`, (cve * 1.7) % 10),
      );
    if (device % 10 === 0) usual.push(exportRow(`device-${device}`, null, null));
  }

  it('should give the entries of the whole parse for export rows, and read them from their bytes', () => {
    const whole = { rows: 0 };
    const expected = scan(page(usual), 1 << 20, undefined, whole);
    expect(whole.rows).toBe(usual.length);
    expect(expected.every((entry) => !('invalid' in entry))).toBe(true);
    for (const size of CHUNK_SIZES) {
      const parsed = { rows: 0 };
      expect(scan(page(usual), size, new BulkRowReader(), parsed)).toEqual(expected);
      // Rows split over chunks are read too, once joined.
      expect(parsed.rows).toBe(0);
    }
  });

  it('should give the same entries and the same reasons for invalid rows as the whole parse for unusual rows', () => {
    const rows = [...usual.slice(0, 3), ...UNUSUAL_ROWS, ...usual.slice(3, 6)];
    const expected = scan(page(rows), 1 << 20);
    expect(expected.filter((entry) => 'invalid' in entry).length).toBeGreaterThanOrEqual(10);
    for (const size of CHUNK_SIZES) expect(scan(page(rows), size, new BulkRowReader())).toEqual(expected);
  });

  it.each(UNUSUAL_ROWS)('should read %s as the whole parse does', (row) => {
    // toEqual tells -0 from 0, as Object.is does.
    expect(scan(page([row]), 1 << 20, new BulkRowReader())).toEqual(scan(page([row]), 1 << 20));
  });

  it.each(MALFORMED_ROWS)('should fail the page on %s as the whole parse does', (row) => {
    const rows = [usual[0] as string, row, usual[1] as string];
    const expected = thrown(() => scan(page(rows), 1 << 20));
    expect(expected).toMatch(/^MalformedODataError: /);
    for (const size of CHUNK_SIZES)
      expect(thrown(() => scan(page(rows), size, new BulkRowReader()))).toBe(expected);
  });

  it('should give CVE ids in upper case, whatever case the export wrote them in', () => {
    const rows = [exportRow('d1', 'cve-2024-1234', 9.8), exportRow('d1', 'Cve-2024-1234', 7.5)];
    for (const reader of [undefined, new BulkRowReader()])
      expect(
        scan(page(rows), 1 << 20, reader).map((entry) => 'vulnerability' in entry && entry.vulnerability?.id),
      ).toEqual(['CVE-2024-1234', 'CVE-2024-1234']);
  });

  it('should read a cvssScore sent as numeric text, the type Microsoft documents for the export, as its number', () => {
    const rows = [
      '{"deviceId":"d1","cveId":"CVE-2024-1","cvssScore":"9.8"}',
      '{"deviceId":"d1","cveId":"CVE-2024-2","cvssScore":" 10.0 "}',
      '{"deviceId":"d1","cveId":"CVE-2024-3","cvssScore":""}',
      '{"deviceId":"d1","cveId":"CVE-2024-4","cvssScore":9.8}',
    ];
    for (const reader of [undefined, new BulkRowReader()])
      expect(
        scan(page(rows), 1 << 20, reader).map(
          (entry) => 'vulnerability' in entry && entry.vulnerability?.cvssV3,
        ),
      ).toEqual([9.8, 10, null, 9.8]);
  });

  it('should decline the rows it cannot read exactly', () => {
    const reader = new BulkRowReader();
    const declined = [
      '{"deviceId":"d\\u0041","cveId":"CVE-1"}',
      '{"DeviceId":"d2","cveId":"CVE-1"}',
      '{"deviceId":"d2","nested":{}}',
      '{"deviceId":"d2","cveId":"CVE-1","vulnerabilitySeverityLevel":"high"}',
      '{"cveId":"CVE-1"}',
      '{"deviceId":"d1","cveId":"CVE-1"',
    ];
    for (const row of declined) expect(reader.read(Buffer.from(row), 0)).toBe(-1);
    const row = Buffer.from(' {"deviceId":"d1","cveId":"CVE-1","cvssScore":9.8} ');
    expect(reader.read(row, 1)).toBe(row.length - 1);
    expect(reader.value).toEqual({
      deviceId: 'd1',
      vulnerability: { id: 'CVE-1', severity: null, cvssV3: 9.8 },
    });
  });
});
