import { settledWithin } from '@urs/bus';
import type { Logger } from '@urs/logging';
import { errorMessage } from '@urs/resilience';

export interface DeadlineSweepOptions {
  /** One sweep (CycleCompletion.closeOverdue). */
  sweep: () => Promise<unknown>;
  /** The pause between the end of one sweep and the start of the next, ms (URS_DEADLINE_SWEEP_MS). */
  everyMs: number;
  logger: Logger;
}

export interface DeadlineSweep {
  /** Starts the sweeps, the first after `everyMs`. */
  start(): void;
  /**
   * Stops starting sweeps and waits up to `withinMs` for the one under way: its Redis commands wait while
   * Redis is away, and a stop must end within its time. A sweep left behind is logged; what it had not sent
   * the next sweep sends, on this replica or another.
   */
  close(withinMs: number): Promise<void>;
}

/** Sweeps cycles past their deadline (closed as partial) one after another; every replica sweeps, the claim picks one. */
export function createDeadlineSweep(options: DeadlineSweepOptions): DeadlineSweep {
  const { logger } = options;
  let timer: NodeJS.Timeout | undefined;
  let sweeping: Promise<void> = Promise.resolve();
  const sweep = (): void => {
    sweeping = options
      .sweep()
      .then(() => undefined)
      .catch((error: unknown) => logger.warn('deadline sweep failed', { reason: errorMessage(error) }))
      .finally(() => {
        if (timer !== undefined) timer = setTimeout(sweep, options.everyMs);
      });
  };
  return {
    start() {
      timer = setTimeout(sweep, options.everyMs);
    },
    async close(withinMs) {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      if (!(await settledWithin([sweeping], withinMs)))
        logger.warn(
          'deadline sweep still under way at the stop: left behind, the next sweep sends what it had not',
          {
            withinMs,
          },
        );
    },
  };
}
