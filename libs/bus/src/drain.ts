import type { Logger } from '@urs/logging';
import { sleep } from '@urs/resilience';

/** Whether every one of `running` (as it is when called) settled within timeoutMs. */
export async function settledWithin(
  running: Iterable<Promise<unknown>>,
  timeoutMs: number,
): Promise<boolean> {
  const timeout = new AbortController();
  const all = Promise.allSettled([...running]).then(() => true);
  const timer = sleep(timeoutMs, timeout.signal).then(() => false);
  const done = await Promise.race([all, timer]);
  timeout.abort();
  return done;
}

export interface DrainOptions {
  /** The messages being handled; read again after the abort (a Set the runner keeps up to date). */
  running: ReadonlySet<Promise<unknown>>;
  /** How long they may take to finish, then how long again to return once aborted, ms. */
  drainTimeoutMs: number;
  /** Aborts the handlers' `signal`. */
  abort: () => void;
  log: Logger;
}

/**
 * Close's wait for the messages in flight: they may finish within drainTimeoutMs; then their handlers'
 * signal is aborted and they may take as long again to return. Resolves true when all of them settled,
 * false when some did not return even then (they run on unwatched, and their messages stay uncommitted):
 * a stop must end within its time whatever a handler does.
 */
export async function drainWithin(options: DrainOptions): Promise<boolean> {
  const { running, drainTimeoutMs, log } = options;
  if (await settledWithin(running, drainTimeoutMs)) return true;
  log.warn('messages in flight did not finish in time; aborting them', {
    drainTimeoutMs,
    inFlight: running.size,
  });
  options.abort();
  if (await settledWithin(running, drainTimeoutMs)) return true;
  log.warn('handlers did not stop when aborted; their messages stay uncommitted', {
    inFlight: running.size,
  });
  return false;
}
