import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import {
  MalformedODataError,
  type BulkOptions,
  type DefenderClient,
  type ODataRest,
  type ODataSink,
} from '@urs/defender';
import { UrsError } from '@urs/resilience';
import type { Registry } from '@urs/telemetry';
import {
  FOLD_THREADS,
  FOLD_THREAD_RESOURCE_LIMITS,
  HEAP_BUDGET_EXIT_CODE,
  type FoldThreadData,
} from './fold-heap';
import { foldRows, VulnerabilityFolder, type FoldState } from './summarise';

export { FOLD_THREADS, FOLD_THREAD_RESOURCE_LIMITS } from './fold-heap';

/** Bytes handed to the fold thread at once. */
const PART_BYTES = 1024 * 1024;
/**
 * Parts handed over and not yet scanned, past which the answer is read no further until the thread
 * catches up: read from a fast network (a nearby simulator reads faster than the thread scans), a ~50 MB
 * page would otherwise queue up for the thread.
 */
const PARTS_AHEAD = 8;

/**
 * The fold thread reached its heap limit and was ended (by Node, or by itself past its budget: see
 * `pastHeapBudget`): the export's read fails, retryably (the tenant's next cycle reads it again), and the
 * process goes on.
 */
export class ExportFoldMemoryError extends UrsError {
  constructor(heapMb: number, cause?: Error) {
    super(
      'EXPORT_FOLD_OUT_OF_MEMORY',
      `the bulk export's fold thread reached its heap limit (${heapMb} MiB) and was ended: the export was ` +
        'not read, and is read again at the next cycle; URS_BULK_FOLD_THREAD=false folds it on the main ' +
        'thread, under its own heap cap',
      { canRetry: true, ...(cause ? { cause } : {}), details: { heapMb } },
    );
  }
}

/** Node's error for a worker ended at its resource limits. */
function outOfMemory(error: Error): boolean {
  return (error as { code?: unknown }).code === 'ERR_WORKER_OUT_OF_MEMORY';
}

/** What the main thread asks of the export's fold thread. */
export type FoldRequest =
  | { type: 'begin' }
  | { type: 'chunk'; bytes: Uint8Array }
  | { type: 'end'; id: number }
  | { type: 'fold'; id: number };

/** What the fold thread answers (`id` is the request's). */
export type FoldReply =
  | { type: 'took' }
  | { id: number; type: 'end'; rest: ODataRest; invalid: string[] }
  | { id: number; type: 'end'; malformed: string; invalid: string[] }
  | { id: number; type: 'fold'; state: FoldState };

/**
 * A bulk export's fold on a thread of its own: the main thread reads the answer off the socket (TLS, HTTP)
 * and hands each chunk over, and the fold thread scans the rows and folds them meanwhile, so the read of a
 * large export uses two cores instead of one. One per export read; `close` ends the thread.
 */
export class WorkerExportFold {
  private readonly worker: Worker;
  private next = 0;
  private readonly waiting = new Map<
    number,
    { resolve: (reply: FoldReply) => void; reject: (error: Error) => void }
  >();
  private failed: Error | undefined;
  /** Parts handed over that the thread has not scanned yet, and the push waiting for it to catch up. */
  private ahead = 0;
  private caughtUp: (() => void) | undefined;

  /** `heapMb`: the thread's old space, and the heap it may use (FOLD_THREAD_RESOURCE_LIMITS by default). */
  constructor(
    workerPath = join(__dirname, 'export-fold-worker.js'),
    heapMb: number = FOLD_THREAD_RESOURCE_LIMITS.maxOldGenerationSizeMb,
  ) {
    this.worker = new Worker(workerPath, {
      resourceLimits: { ...FOLD_THREAD_RESOURCE_LIMITS, maxOldGenerationSizeMb: heapMb },
      workerData: { heapBudgetMb: heapMb } satisfies FoldThreadData,
    });
    const fail = (error: Error): void => {
      this.failed ??= outOfMemory(error) ? new ExportFoldMemoryError(heapMb, error) : error;
      const failed = this.failed;
      // A push waiting for the thread fails with it at once (see `behind`).
      this.resume();
      for (const { reject } of this.waiting.values()) reject(failed);
      this.waiting.clear();
    };
    this.worker.on('message', (reply: FoldReply) => {
      if (!('id' in reply)) {
        this.ahead--;
        if (this.ahead < PARTS_AHEAD) this.resume();
        return;
      }
      const waiter = this.waiting.get(reply.id);
      this.waiting.delete(reply.id);
      waiter?.resolve(reply);
    });
    this.worker.on('error', fail);
    this.worker.on('exit', (code) =>
      fail(
        code === HEAP_BUDGET_EXIT_CODE
          ? new ExportFoldMemoryError(heapMb)
          : new Error(`the export's fold thread ended (exit code ${code})`),
      ),
    );
  }

  /**
   * A sink for one answer (a page, or a retry of one): its bytes go to the fold thread, and the rows it
   * skipped as invalid to `reportInvalid` when the answer ends.
   */
  readonly sink = (reportInvalid: (reason: string) => void): ODataSink => {
    this.worker.postMessage({ type: 'begin' } satisfies FoldRequest);
    // The socket's chunks (16–64 KB) are gathered into parts of ~1 MB, each handed over (transferred) whole:
    // a message per chunk cost more than the scan it moved.
    let part = new Uint8Array(PART_BYTES);
    let used = 0;
    const handOver = (): void => {
      if (used === 0) return;
      this.send(part.subarray(0, used));
      part = new Uint8Array(PART_BYTES);
      used = 0;
    };
    return {
      push: (chunk) => {
        // The thread gone, the answer is read no further: the rest of the page (up to ~50 MB, most of a
        // minute) would hold its call slot and bulk-cap place only for the end to fail.
        if (this.failed) throw this.failed;
        if (used + chunk.length > part.length) handOver();
        if (chunk.length > part.length) this.send(new Uint8Array(chunk));
        else {
          part.set(chunk, used);
          used += chunk.length;
        }
        return this.behind();
      },
      end: async () => {
        handOver();
        const reply = await this.request({ type: 'end', id: this.next++ });
        if (reply.type !== 'end') throw new Error('the fold thread answered out of turn');
        for (const reason of reply.invalid) reportInvalid(reason);
        if ('malformed' in reply) throw new MalformedODataError(reply.malformed);
        return reply.rest;
      },
    };
  };

  /** The fold, handed over from the fold thread (its typed arrays are moved, not copied). */
  async fold(): Promise<VulnerabilityFolder> {
    const reply = await this.request({ type: 'fold', id: this.next++ });
    if (reply.type !== 'fold') throw new Error('the fold thread answered out of turn');
    return VulnerabilityFolder.from(reply.state);
  }

  /** Ends the thread; what is asked of it afterwards fails. */
  async close(): Promise<void> {
    this.worker.removeAllListeners('exit');
    this.failed ??= new Error("the export's fold thread was closed");
    await this.worker.terminate();
  }

  /** Hands bytes over to the thread (their buffer moved, not copied). */
  private send(bytes: Uint8Array<ArrayBuffer>): void {
    this.ahead++;
    this.worker.postMessage({ type: 'chunk', bytes } satisfies FoldRequest, [bytes.buffer]);
  }

  /** Undefined while the thread keeps up; else resolves once it has caught up, or rejects when it fails. */
  private behind(): Promise<void> | undefined {
    if (this.ahead < PARTS_AHEAD) return undefined;
    return new Promise((resolve, reject) => {
      this.caughtUp = () => (this.failed ? reject(this.failed) : resolve());
    });
  }

  private resume(): void {
    const caughtUp = this.caughtUp;
    this.caughtUp = undefined;
    caughtUp?.();
  }

  private request(request: Extract<FoldRequest, { id: number }>): Promise<FoldReply> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.waiting.set(request.id, { resolve, reject });
      this.worker.postMessage(request);
    });
  }
}

/** A tenant's bulk export read by `client` and folded on a thread of its own (see WorkerExportFold). */
export async function foldExportOnThread(
  client: Pick<DefenderClient, 'scanVulnerabilitiesByMachine'>,
  options?: BulkOptions,
): Promise<VulnerabilityFolder> {
  const fold = new WorkerExportFold();
  try {
    await client.scanVulnerabilitiesByMachine(fold.sink, options);
    return await fold.fold();
  } finally {
    await fold.close();
  }
}

/** A tenant's bulk export read by `client` and folded row by row on this thread (as URS_BULK_FOLD_THREAD=false). */
export async function foldExportHere(
  client: Pick<DefenderClient, 'readVulnerabilitiesByMachine'>,
  options?: BulkOptions,
): Promise<VulnerabilityFolder> {
  return foldRows((onRow) => client.readVulnerabilitiesByMachine(onRow, options));
}

/** Folds a tenant's bulk export on a fold thread when one is free, else on the main thread. */
export type ExportFolds = (
  client: Pick<DefenderClient, 'readVulnerabilitiesByMachine' | 'scanVulnerabilitiesByMachine'>,
  options?: BulkOptions,
) => Promise<VulnerabilityFolder>;

/**
 * The process's fold threads: at most `threads` (FOLD_THREADS) at once, the heaps its memory limit is sized
 * for. One replica reads the exports of every tenant whose partition it holds (16 partitions), several at
 * once: an export read while every thread is busy folds on the main thread at once, under the main heap's
 * cap, rather than wait for one. So a large tenant's export (minutes) never holds a small one's back; it is
 * only read on one core instead of two. A thread is taken before the read's first call asks for its slot,
 * and none is ever waited for: a read holds no call slot (nor bulk-cap place) waiting for a thread.
 */
export function createExportFolds(metrics: Registry, threads: number = FOLD_THREADS): ExportFolds {
  const folds = metrics.counter(
    'urs_bulk_export_folds_total',
    "Bulk exports read and folded, by thread (fold: on a fold thread; main: on the main thread, the process's fold threads all busy with other tenants' exports).",
  );
  for (const thread of ['fold', 'main']) folds.init({ thread });
  let busy = 0;
  return async (client, options) => {
    if (busy >= threads) {
      folds.inc({ thread: 'main' });
      return foldExportHere(client, options);
    }
    busy++;
    folds.inc({ thread: 'fold' });
    try {
      return await foldExportOnThread(client, options);
    } finally {
      busy--;
    }
  };
}
