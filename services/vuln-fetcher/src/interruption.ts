import { defaultMaxListeners, setMaxListeners } from 'node:events';
import { UrsError, anyAborted, sleep, type Interruption } from '@urs/resilience';

// How a batch's waits end early: the process stopping, the runner giving the batch up, an export ending.

/** A batch's interruption, which the handler may also abort itself (its claim on the batch was lost). */
export interface BatchInterruption extends Interruption {
  abort: () => void;
}

/**
 * The interruptions of the batches in flight: each batch's signal aborts when the service stops (`stop`,
 * which lives as long as the process) or when the runner gives the batch up (its message's own signal).
 *
 * `stop` holds one listener while batches run, not one per batch: the batches in flight are many (16
 * partitions at once by default, and within each the batches of different tenants), and a listener each
 * would pass Node's 10 and draw its leak warning on a signal that lives for weeks.
 *
 * A batch's signal takes one listener of each of its device calls in flight (a Defender call listens to its
 * signal while it waits for its turn, its quota, its slot or its retry, one after the other), so up to
 * `callsPerBatch` at once, besides the batch's own wait (a bulk poll, the export probe): its limit of
 * listeners is raised to that bound, where Node's default of 10 would warn of a leak at 11 calls. Each
 * call lets go of its listener when it ends (see the Defender client's tests).
 */
export function createBatchInterruptions(
  stop: AbortSignal | undefined,
  callsPerBatch: number,
): (own: AbortSignal | undefined) => BatchInterruption {
  const maxListeners = Math.max(defaultMaxListeners, callsPerBatch + 1);
  const running = new Set<AbortController>();
  const stopAll = (): void => {
    for (const batch of [...running]) batch.abort();
  };
  return (own) => {
    const batch = new AbortController();
    setMaxListeners(maxListeners, batch.signal);
    const abort = (): void => batch.abort();
    if (stop?.aborted || own?.aborted) {
      abort();
      return { signal: batch.signal, abort, release: () => undefined };
    }
    if (running.size === 0) stop?.addEventListener('abort', stopAll, { once: true });
    running.add(batch);
    own?.addEventListener('abort', abort, { once: true });
    return {
      signal: batch.signal,
      abort,
      release: () => {
        own?.removeEventListener('abort', abort);
        if (running.delete(batch) && running.size === 0) stop?.removeEventListener('abort', stopAll);
      },
    };
  };
}

/** Sleeps `ms`, or less when any of the signals is aborted. */
export async function sleepUntil(ms: number, ...signals: (AbortSignal | undefined)[]): Promise<void> {
  const wake = anyAborted(signals);
  try {
    await sleep(ms, wake.signal);
  } finally {
    wake.release();
  }
}

/**
 * A stop, or the runner giving the batch up (its partition moved to another replica), interrupted
 * the batch: fail it retryably, so its offset is not committed and it is handled again.
 */
export function throwIfStopping(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw new UrsError(
      'STOPPING',
      'the batch was interrupted (stop or rebalance); it will be handled again',
      {
        canRetry: true,
      },
    );
  }
}
