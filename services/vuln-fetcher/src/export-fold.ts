import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import {
  MalformedODataError,
  type BulkOptions,
  type DefenderClient,
  type ODataRest,
  type ODataSink,
} from '@urs/defender';
import { VulnerabilityFolder, type FoldState } from './summarise';

/** Bytes handed to the fold thread at once. */
const PART_BYTES = 1024 * 1024;

/** What the main thread asks of the export's fold thread. */
export type FoldRequest =
  | { type: 'begin' }
  | { type: 'chunk'; bytes: Uint8Array }
  | { type: 'end'; id: number }
  | { type: 'fold'; id: number };

/** What the fold thread answers (`id` is the request's). */
export type FoldReply =
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

  constructor(workerPath = join(__dirname, 'export-fold-worker.js')) {
    // A small young generation: the thread's garbage is the rows it scans, each dead once folded in.
    this.worker = new Worker(workerPath, { resourceLimits: { maxYoungGenerationSizeMb: 12 } });
    const fail = (error: Error): void => {
      this.failed ??= error;
      for (const { reject } of this.waiting.values()) reject(error);
      this.waiting.clear();
    };
    this.worker.on('message', (reply: FoldReply) => {
      const waiter = this.waiting.get(reply.id);
      this.waiting.delete(reply.id);
      waiter?.resolve(reply);
    });
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`the export's fold thread ended (exit code ${code})`)));
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
      const bytes = part.subarray(0, used);
      this.worker.postMessage({ type: 'chunk', bytes } satisfies FoldRequest, [part.buffer]);
      part = new Uint8Array(PART_BYTES);
      used = 0;
    };
    return {
      push: (chunk) => {
        if (used + chunk.length > part.length) handOver();
        if (chunk.length > part.length) {
          const bytes = new Uint8Array(chunk);
          this.worker.postMessage({ type: 'chunk', bytes } satisfies FoldRequest, [bytes.buffer]);
          return;
        }
        part.set(chunk, used);
        used += chunk.length;
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
