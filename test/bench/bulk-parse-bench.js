#!/usr/bin/env node
'use strict';
// CPU cost of reading bulk export pages (SoftwareVulnerabilitiesByMachine), not a test: rows per second
// of the row scanner with every row parsed whole and schema-checked, and with the byte reader taking the
// rows of the usual shape. Runs against the compiled package (`npx tsc -b` first).
//
//   node test/bench/bulk-parse-bench.js [--rows N] [--chunk BYTES] [--rounds R]
//     --rows   rows per page (default 50000, ~1 KB each)
//     --chunk  bytes per pushed chunk, as the socket hands them on (default 16384)
//     --rounds timed rounds per path, alternating (default 5; median reported)

const { parseArgs } = require('node:util');
const { ODataRowScanner } = require('../../libs/defender/dist/odata-rows');
const { BulkRowReader, bulkRowEntry } = require('../../libs/defender/dist/bulk-rows');

const { values } = parseArgs({
  options: { rows: { type: 'string' }, chunk: { type: 'string' }, rounds: { type: 'string' } },
});
const ROWS = Number(values.rows ?? 50_000);
const CHUNK = Number(values.chunk ?? 16_384);
const ROUNDS = Number(values.rounds ?? 5);

/** A row in the export's documented key order, shaped like the simulator's (Windows paths escaped). */
function row(device, cve) {
  const id = `${(device * 2654435761) >>> 0}`.padStart(40, 'a');
  const product = ['edge', 'chrome', 'office', 'openssl', 'java'][cve % 5];
  return JSON.stringify({
    id: `${id}_vendor_${product}_1.2.3_CVE-2024-${1000 + cve}`,
    deviceId: id,
    rbacGroupName: 'Servers',
    deviceName: `host-${device}.contoso.com`,
    osPlatform: 'Windows11',
    osVersion: '22H2',
    osArchitecture: 'x64',
    lastSeenTimestamp: '2024-01-10 11:00:00',
    firstSeenTimestamp: '2023-01-10 11:00:00',
    softwareVendor: 'vendor',
    softwareName: product,
    softwareVersion: '1.2.3',
    cveId: `CVE-2024-${1000 + ((device * 31 + cve * 7) % 3000)}`,
    vulnerabilitySeverityLevel: ['Low', 'Medium', 'High', 'Critical'][cve % 4],
    recommendedSecurityUpdate: 'Update for vendor product',
    recommendedSecurityUpdateId: 'KB5034441',
    recommendedSecurityUpdateUrl: 'https://support.microsoft.com/help/KB5034441',
    diskPaths: [`C:\\Program Files\\vendor\\${product}\\${product}.exe`],
    registryPaths: [`HKEY_LOCAL_MACHINE\\SOFTWARE\\vendor\\${product}`],
    exploitabilityLevel: ['NoExploit', 'ExploitIsPublic', 'ExploitIsVerified', 'ExploitIsInKit'][cve % 4],
    recommendationReference: `va-_-vendor-_-${product}`,
    securityUpdateAvailable: true,
    cvssScore: Math.round(((device + cve * 13) % 100) + 1) / 10,
  });
}

const rows = [];
for (let device = 0; rows.length < ROWS; device++)
  for (let cve = 0; cve < 6 && rows.length < ROWS; cve++) rows.push(row(device, cve));
const body = Buffer.from(`{"@odata.context":"x","value":[${rows.join(',')}],"@odata.nextLink":"next"}`);
const chunks = [];
for (let at = 0; at < body.length; at += CHUNK) chunks.push(Buffer.from(body.subarray(at, at + CHUNK)));

function run(withReader) {
  const out = [];
  const scanner = new ODataRowScanner(
    (entry) => out.push(entry),
    bulkRowEntry,
    withReader ? new BulkRowReader() : undefined,
  );
  const started = process.cpuUsage();
  for (const chunk of chunks) scanner.push(chunk);
  scanner.end();
  const used = process.cpuUsage(started);
  if (out.length !== ROWS) throw new Error(`read ${out.length} rows of ${ROWS}`);
  return (used.user + used.system) / 1000;
}

const times = { whole: [], reader: [] };
run(false);
run(true);
for (let round = 0; round < ROUNDS; round++) {
  times.whole.push(run(false));
  times.reader.push(run(true));
}
const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
console.log(`${ROWS} rows, ${(body.length / 1e6).toFixed(1)} MB, ${CHUNK}-byte chunks, median of ${ROUNDS}`);
for (const [name, list] of Object.entries(times)) {
  const ms = median(list);
  console.log(
    `${name.padEnd(7)} ${ms.toFixed(0).padStart(5)} ms CPU  ${((ms * 1000) / ROWS).toFixed(2)} µs/row`,
  );
}
