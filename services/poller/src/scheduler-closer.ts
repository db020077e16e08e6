import type { Closer } from '@urs/resilience';
import type { Scheduler } from './scheduler';

/**
 * The scheduler's closer in the service's stop (ServiceParts.closers). The scheduler stops beginning cycles
 * the instant `stopping` aborts, as the stop begins: the runtime runs the closers only once the runners have
 * closed (the consumer of urs.tenants leaving its group, ~0.5 s, up to URS_SHUTDOWN_TIMEOUT_MS when Kafka is
 * slow), and a cycle begun meanwhile would be cut by the drain and left running, for another replica to take
 * over as abandoned and list again (its quota spent twice). The closer then waits for that same close
 * (Scheduler.close is idempotent): `drainMs` for the cycles to finish and as long again once aborted, after
 * `onClose` (what stops with the scheduler, e.g. a timer).
 */
export function schedulerCloser(
  scheduler: Pick<Scheduler, 'close'>,
  stopping: AbortSignal,
  drainMs: number,
  onClose: () => void = () => undefined,
): Closer {
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    if (closing === undefined) {
      onClose();
      closing = scheduler.close(drainMs);
    }
    return closing;
  };
  // Its failure is the closer's to report, once the closers run.
  const closeNow = (): void => void close().catch(() => undefined);
  if (stopping.aborted) closeNow();
  else stopping.addEventListener('abort', closeNow, { once: true });
  return { name: 'scheduler', close };
}
