/**
 * `@urs/defender/rows`: the bulk export's row readers alone, for a thread or process that scans export
 * bytes it is handed (they read CVSS scores with `@urs/contracts/vulnerabilities`, as every path does). The
 * package's index also loads the client (its token source and HTTP client take ~0.2–0.4 s of CPU to load),
 * which such a reader never uses.
 */
export { BulkRowReader, bulkRowEntry, type BulkRowEntry } from './bulk-rows';
export { MalformedODataError, ODataRowScanner, type ODataRest } from './odata-rows';
