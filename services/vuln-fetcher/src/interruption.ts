import { UrsError, sleep } from '@urs/resilience';

// How a batch's waits end early: the process stopping, the runner giving the batch up, an export ending.

/**
 * A signal aborted once any of `signals` is (at once when one already is), and `release` to stop following
 * them. Not AbortSignal.any: Node keeps every signal made from a long-lived one, such as the process's stop
 * signal (nodejs/node#55351).
 */
export function anyAborted(signals: (AbortSignal | undefined)[]): {
  signal: AbortSignal;
  release: () => void;
} {
  const any = new AbortController();
  const abort = (): void => any.abort();
  for (const one of signals) {
    if (one?.aborted) abort();
    one?.addEventListener('abort', abort, { once: true });
  }
  return {
    signal: any.signal,
    release: () => {
      for (const one of signals) one?.removeEventListener('abort', abort);
    },
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
