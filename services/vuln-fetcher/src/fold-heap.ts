import { getHeapStatistics } from 'node:v8';

/**
 * The export fold thread's heap, MiB (see WorkerExportFold), with both threads' code loading only this. A
 * small young generation: the thread's garbage is the rows it scans, each dead once folded in. A capped old
 * space: the thread held 25–27 MiB at 100,000 devices and 48 MiB at 400,000 (test/bench/export-read-bench.js
 * --read export-thread), so 128 leaves room for fleets beyond a million, and the process's heaps stay within
 * the memory limit its heap cap was set from (README, "Node flags").
 */
export const FOLD_THREAD_RESOURCE_LIMITS = {
  maxYoungGenerationSizeMb: 12,
  maxOldGenerationSizeMb: 128,
} as const;

/**
 * Fold threads a process runs at once: the pod's memory limit is sized for the main heap and this many
 * threads' heaps (deploy/k8s/vuln-fetcher.yaml; deploy/test/k8s.test.ts checks it). An export read while
 * they are all busy is folded on the main thread instead (see `createExportFolds`).
 */
export const FOLD_THREADS = 1;

/** What the fold thread is started with (its `workerData`). */
export interface FoldThreadData {
  /** The heap the thread may use, MiB: past it, it ends itself with HEAP_BUDGET_EXIT_CODE. */
  heapBudgetMb: number;
}

/** The exit code of a fold thread that ended itself past its heap budget. */
export const HEAP_BUDGET_EXIT_CODE = 70;

/**
 * Whether the thread's heap in use is past `budgetMb`. Checked by the thread itself because the process's
 * `--max-old-space-size` (deploy/node-flags.json) overrides a worker's own `maxOldGenerationSizeMb`: V8 reads
 * the flag for every isolate, so under it the thread's heap could grow to the process's cap again.
 */
export function pastHeapBudget(budgetMb: number): boolean {
  return getHeapStatistics().used_heap_size > budgetMb * 2 ** 20;
}
