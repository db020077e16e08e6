import { parentPort, workerData } from 'node:worker_threads';
// The row readers alone, not the package's index, which loads the client too.
import {
  BulkRowReader,
  MalformedODataError,
  ODataRowScanner,
  bulkRowEntry,
  type BulkRowEntry,
} from '@urs/defender/rows';
import { VulnerabilityFolder } from './summarise';
import type { FoldReply, FoldRequest } from './export-fold';
import { HEAP_BUDGET_EXIT_CODE, pastHeapBudget, type FoldThreadData } from './fold-heap';

/**
 * The thread that reads a bulk export's rows and folds them (see WorkerExportFold): it is given each page's
 * bytes as they arrive, scans them as the Defender client would (a retried page begins again: the fold
 * takes its rows twice and changes nothing), and hands the fold over when asked.
 */
const port = parentPort;
if (!port) throw new Error('export-fold-worker runs as a worker thread');
const { heapBudgetMb } = workerData as FoldThreadData;

const folder = new VulnerabilityFolder();
const reader = new BulkRowReader();
let scanner: ODataRowScanner<BulkRowEntry> | undefined;
let failure: string | undefined;
let invalid: string[] = [];

function onRow(row: BulkRowEntry): void {
  if ('invalid' in row) {
    invalid.push(row.invalid);
    if (row.deviceId !== undefined) folder.add(row.deviceId, null);
    return;
  }
  folder.add(row.deviceId, row.vulnerability);
}

port.on('message', (request: FoldRequest) => {
  switch (request.type) {
    case 'begin':
      scanner = new ODataRowScanner(onRow, bulkRowEntry, reader);
      failure = undefined;
      invalid = [];
      return;
    case 'chunk':
      if (failure === undefined && scanner) {
        try {
          scanner.push(Buffer.from(request.bytes.buffer, request.bytes.byteOffset, request.bytes.byteLength));
        } catch (error) {
          failure = (error as Error).message;
        }
      }
      // Past its budget the thread ends itself, its heap with it: the main thread fails the read.
      if (pastHeapBudget(heapBudgetMb)) process.exit(HEAP_BUDGET_EXIT_CODE);
      // Every part is acknowledged, scanned or not: the main thread reads on only as the parts are taken.
      port.postMessage({ type: 'took' } satisfies FoldReply);
      return;
    case 'end': {
      let reply: FoldReply;
      try {
        if (failure !== undefined) throw new MalformedODataError(failure);
        if (!scanner) throw new MalformedODataError('no answer was begun');
        reply = { id: request.id, type: 'end', rest: scanner.end(), invalid };
      } catch (error) {
        reply = { id: request.id, type: 'end', malformed: (error as Error).message, invalid };
      }
      scanner = undefined;
      port.postMessage(reply);
      return;
    }
    case 'fold': {
      const state = folder.state();
      port.postMessage({ id: request.id, type: 'fold', state } satisfies FoldReply, [
        state.cves.buffer,
        state.scores.buffer,
        state.runStarts.buffer,
        state.runEnds.buffer,
        state.runBefore.buffer,
      ]);
      return;
    }
  }
});
