import type { Logger } from '@urs/logging';
import { errorMessage, retryDelayMs, retryPolicy, type RetryPolicy } from '@urs/resilience';
import { crashHeals } from './crash';
import { settledWithin } from './drain';
import { BusError } from './publisher';

export const DEFAULT_RUNNER_RESTART: RetryPolicy = retryPolicy({
  maxAttempts: Infinity,
  initialDelayMs: 250,
  maxDelayMs: 5_000,
});

/**
 * How long a joined consumer may go without an answer from its broker (no request answered, no batch being
 * handled) before it is reported not up, ms, beyond the time its broker takes to answer (SLOWEST_ANSWER_MS):
 * it asks every 0.5 s to 3 s while all is well, and KafkaJS takes up to a minute of retries to give up on a
 * broker that is away.
 */
const UNANSWERED_NOT_UP_MS = 10_000;

/**
 * The slowest answer that lengthens the bar above, ms: KafkaJS's request timeout (30 s), past which a request
 * has failed rather than being slow. A broker that takes 10 s to answer each request leaves 10 s between its
 * answers: without its answers' time in the bar, the consumer was reported down before each answer and up
 * after it, /readyz flapping while the broker still answered.
 */
const SLOWEST_ANSWER_MS = 30_000;

/** How long the slowest answer seen keeps lengthening the bar before a later answer's time replaces it, ms. */
const SLOW_ANSWER_KEPT_MS = 60_000;

export interface ConsumerKeeperOptions {
  groupId: string;
  log: Logger;
  /** Paces the restarts of a consumer stopped by what may heal by waiting: backoff, for as long as it takes. */
  restart: RetryPolicy;
  /**
   * Starts the stopped consumer again (KafkaJS's consumer.run); a rejection counts as another crash. KafkaJS
   * disconnected the consumer before it reported the crash, so run() builds the group membership and its fetch
   * loop anew (the subscriptions are kept).
   */
  run: () => Promise<void>;
}

/**
 * Keeps a KafkaJS consumer going through what KafkaJS stops it for, and says whether it is up. Told of the
 * consumer's events (joined its group, a request answered, a crash), it restarts the consumer (`run`) when
 * what stopped it may heal by waiting (crashHeals: the broker away or restarting, for however long), and
 * fails for good otherwise.
 *
 * KafkaJS restarts a crashed consumer by itself only when the error's root cause is `retriable`, and leaves it
 * stopped for good otherwise, outages included (see crash.ts): the runner turns that off (its consumer's
 * `retry.restartOnFailure`) and leaves the judgement and the pace to this.
 */
/** What the keeper reads of a request KafkaJS saw answered (its REQUEST event's payload). */
export interface AnsweredRequest {
  apiName: string;
  duration: number;
}

/**
 * Requests answered when the group is ready, not when the broker is: a join waits for every member to rejoin
 * (up to the rebalance timeout, a minute), so its time says nothing of how fast the broker answers.
 */
const GROUP_WAITS: ReadonlySet<string> = new Set(['JoinGroup', 'SyncGroup']);

export interface ConsumerKeeper {
  /** The consumer joined its group (KafkaJS's GROUP_JOIN): it consumes again if it was down. */
  joined(): void;
  /**
   * The broker answered one of the consumer's requests (KafkaJS's REQUEST: its `apiName`, and `duration`, ms
   * from when it was sent; none, an answer that says nothing of the broker's speed).
   */
  answered(request?: AnsweredRequest): void;
  /** KafkaJS stopped the consumer (its CRASH event, or a restart's run() rejected) with `error`. */
  crashed(error: Error): void;
  /**
   * Joined its group, and its broker answered within the last 10 s, plus the time its slowest answer of the
   * last minute took (at most 30 s more). A batch handled however long still heartbeats (partition-ordered.ts),
   * so the broker keeps answering while the member is in its group. False from a crash until the restarted
   * consumer joined again.
   */
  isUp(): boolean;
  /**
   * Resolves with a non-retryable BusError CONSUMER_STOPPED (its cause the consumer's error) when the
   * consumer crashed with an error that waiting does not mend. Never resolves otherwise.
   */
  failed(): Promise<Error>;
  /** The consumer's first run() (start), joining its group: stop waits for it as for a restart. */
  track(run: Promise<void>): void;
  /**
   * Restarts nothing more and ignores crashes from now on (the consumer is being closed), then waits up to
   * withinMs for the run() in flight, if any (the start or a restart joining the group): KafkaJS's
   * disconnect drops a consumer that has not joined yet without stopping it, so that it joins after close.
   * Resolves true once no run() is in flight, false when one still was after withinMs (see `joining`).
   * Idempotent.
   */
  stop(withinMs: number): Promise<boolean>;
  /** Settles (never rejects) once no run() is in flight: at once when none is. */
  joining(): Promise<void>;
}

export function createConsumerKeeper(options: ConsumerKeeperOptions): ConsumerKeeper {
  const { log } = options;
  let stopped = false;
  let joined = false;
  // Proof that the broker answers: a member fetches every maxWaitTimeInMs and heartbeats every 3 s, also while
  // it handles a batch. A broker that went away stops these long before KafkaJS gives up on it.
  let answeredAt = Date.now();
  /** The slowest recent answer's time (ms) and when it came: a slow broker's answers come as far apart. */
  let slowest = { tookMs: 0, at: answeredAt };
  /** Since when the consumer is down (crashed, not joined again), and its restarts since. */
  let down: { since: number; restarts: number; timer: NodeJS.Timeout | undefined } | undefined;
  /** The start or restart under way (its run() not settled yet), if any; never rejects. */
  let inFlight: Promise<void> | undefined;
  let fail: (error: Error) => void = () => undefined;
  const failure = new Promise<Error>((resolve) => (fail = resolve));

  /**
   * What may heal by waiting is restarted, with backoff, until the consumer joins its group again: one
   * warning when it goes down, one line when it is back. Anything else fails for good.
   */
  function crashed(error: Error): void {
    joined = false;
    if (stopped) return;
    if (!crashHeals(error)) {
      log.error('consumer stopped for good', { error });
      fail(
        new BusError(
          'CONSUMER_STOPPED',
          `Kafka stopped the consumer of group ${options.groupId} with an error that waiting does not mend: ${errorMessage(error)}`,
          { cause: error, details: { groupId: options.groupId } },
        ),
      );
      return;
    }
    if (!down) {
      down = { since: Date.now(), restarts: 0, timer: undefined };
      log.warn('consumer stopped by Kafka; restarting it until it joins its group again', {
        reason: errorMessage(error),
        error,
      });
    } else {
      log.debug('consumer restart failed; trying again', { reason: errorMessage(error) });
    }
    const current = down;
    current.restarts++;
    current.timer = setTimeout(
      () => {
        current.timer = undefined;
        if (!stopped) restart();
      },
      retryDelayMs(options.restart, current.restarts),
    );
  }

  /** Runs the consumer again; stop waits for it, so that close disconnects what it joined. */
  function restart(): void {
    track(
      options.run().catch((failed: unknown) => {
        crashed(failed instanceof Error ? failed : new Error(String(failed)));
      }),
    );
  }

  function track(run: Promise<void>): void {
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    inFlight = settled;
    void settled.then(() => {
      if (inFlight === settled) inFlight = undefined;
    });
  }

  return {
    joined() {
      joined = true;
      // A restart that joined while the runner closes is not consuming again: close disconnects it.
      if (down && !stopped) {
        log.info('consuming again', { downMs: Date.now() - down.since, restarts: down.restarts });
        down = undefined;
      }
    },
    answered(request) {
      answeredAt = Date.now();
      const tookMs = request && !GROUP_WAITS.has(request.apiName) ? request.duration : 0;
      const took = Math.min(Math.max(0, tookMs), SLOWEST_ANSWER_MS);
      if (took >= slowest.tookMs || answeredAt - slowest.at > SLOW_ANSWER_KEPT_MS) {
        slowest = { tookMs: took, at: answeredAt };
      }
    },
    crashed,
    isUp() {
      const barMs = UNANSWERED_NOT_UP_MS + slowest.tookMs;
      return joined && Date.now() - answeredAt < barMs;
    },
    failed() {
      return failure;
    },
    async stop(withinMs) {
      stopped = true;
      clearTimeout(down?.timer);
      return inFlight ? settledWithin([inFlight], withinMs) : true;
    },
    track,
    async joining() {
      await inFlight;
    },
  };
}
