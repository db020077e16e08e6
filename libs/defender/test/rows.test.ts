import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import * as index from '../src';
import * as rows from '../src/rows';

const ROOT = join(__dirname, '../../..');

describe('@urs/defender/rows', () => {
  it('reads export rows, and fails a malformed answer with the error the client throws', () => {
    const read: rows.BulkRowEntry[] = [];
    const scanner = new rows.ODataRowScanner(
      (row) => read.push(row),
      rows.bulkRowEntry,
      new rows.BulkRowReader(),
    );
    const row = { deviceId: 'a'.repeat(40), cveId: 'CVE-2026-1', cvssScore: 9.8, softwareName: 'app' };
    scanner.push(Buffer.from(`{"value":[${JSON.stringify(row)}]}`));
    expect(scanner.end().hasValue).toBe(true);
    expect(read).toEqual([rows.bulkRowEntry(row)]);
    const truncated = new rows.ODataRowScanner(() => undefined, rows.bulkRowEntry, new rows.BulkRowReader());
    truncated.push(Buffer.from('{"value":[{"deviceId":'));
    expect(() => truncated.end()).toThrow(index.MalformedODataError);
  });

  it('loads, compiled, without the client, its token source or its HTTP client', () => {
    // Compiled code, as the vuln-fetcher's fold thread loads it (`npm run build` comes before the tests).
    const loaded = execFileSync(
      process.execPath,
      [
        '-e',
        `const rows = require('@urs/defender/rows');
         const files = Object.keys(require.cache).map((file) => file.split('/').slice(-3).join('/'));
         console.log(JSON.stringify({ exports: Object.keys(rows).sort(), files }));`,
      ],
      { cwd: ROOT, encoding: 'utf8' },
    );
    const { exports, files } = JSON.parse(loaded) as { exports: string[]; files: string[] };
    expect(exports).toEqual(['BulkRowReader', 'MalformedODataError', 'ODataRowScanner', 'bulkRowEntry']);
    expect(files.filter((file) => /axios|@azure|client\.js|token\.js|bottleneck/.test(file))).toEqual([]);
    expect(files.some((file) => file.endsWith('dist/bulk-rows.js'))).toBe(true);
  });
});
