/**
 * `@urs/defender/rows`: the bulk export's row readers alone, for a thread or process that scans export
 * bytes it is handed, and the CVSS reading every path shares (`urs score` reads its input's with it). The
 * package's index also loads the client (its token source and HTTP client take ~0.2–0.4 s of CPU to load),
 * which such a reader never uses.
 */
export { BulkRowReader, bulkRowEntry, type BulkRowEntry } from './bulk-rows';
export { MalformedODataError, ODataRowScanner, type ODataRest } from './odata-rows';
export { readCvss, unreadableScore } from './schema';
