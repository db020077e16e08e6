import type { Logger } from '@urs/logging';
import { UrsError, errorCode, errorMessage } from '@urs/resilience';
import { settledWithin } from './drain';

/** One failure of one consumed message: what a dead letter is written for. */
export interface DeadLetterSource {
  topic: string;
  partition: number;
  offset: string;
  /**
   * The message's broker timestamp, epoch ms as text: with the offset it tells a record from one a topic
   * deleted and made again holds at the same offset.
   */
  timestamp: string;
  /** The failure's code: another failure of the same record is another dead letter. */
  code: string;
}

/**
 * Which dead letters the cluster has written (`createDeadLetterLedger` in `@urs/store`), so that a record every
 * replica reads again at every start (`urs.tenants`, read from the beginning in a group of each replica's own)
 * goes to the dead-letter topic once, not once per replica per restart. A writer claims a source, writes its
 * letter, then marks it written; a writer that fails gives its claim back, and one that dies leaves it to
 * lapse, so that the letter is written by a later reader instead of never.
 */
/**
 * A ledger's answer to a claim: `claimed`, this process is to write the letter now (nobody has, nobody else
 * is writing it); `written`, it is on the dead-letter topic; `busy`, another process claimed it and has
 * neither written it nor given the claim back (it may still die before it does: the claim then lapses).
 */
export type DeadLetterClaim = 'claimed' | 'written' | 'busy';

export interface DeadLetterLedger {
  claim(source: DeadLetterSource): Promise<DeadLetterClaim>;
  /** The claimed source's dead letter is on the dead-letter topic. */
  written(source: DeadLetterSource): Promise<void>;
  /** The claimed source's dead letter could not be written: another reader (or this one, again) may. */
  release(source: DeadLetterSource): Promise<void>;
}

/**
 * What became of a dead letter: `written` now; `written-before`, the ledger says so; `busy`, another process
 * is writing it: the message is not settled yet, and is to ask again later (that process may die first).
 */
export type DeadLetterOutcome = 'written' | 'written-before' | 'busy';

/**
 * How long the ledger may take to answer, ms. Its Redis client queues commands while Redis is away rather
 * than failing them, so an unbounded call would hold the invalid record, and every one behind it on its
 * partition, for as long as Redis is away.
 */
export const DEAD_LETTER_LEDGER_TIMEOUT_MS = 2_000;

/** What `call` resolves to, or a rejection when it takes longer than `timeoutMs` (it runs on, unwatched). */
async function answerWithin<T>(call: () => Promise<T>, timeoutMs: number): Promise<T> {
  const answer = call();
  if (!(await settledWithin([answer], timeoutMs))) {
    throw new UrsError('DEAD_LETTER_LEDGER_TIMEOUT', `the ledger did not answer within ${timeoutMs} ms`, {
      canRetry: true,
      infrastructure: true,
    });
  }
  return answer;
}

/**
 * Writes a dead letter unless the ledger says the cluster has, or another process is writing it; without a
 * ledger, always. Rejects as `write` does (the claim given back first), so the message stays unsettled and is
 * tried again. A ledger that fails to answer, or to answer within `timeoutMs` (Redis away), does not hold the
 * message up: the letter is written, a duplicate at worst.
 */
export async function writeDeadLetterOnce(
  ledger: DeadLetterLedger | undefined,
  source: DeadLetterSource,
  write: () => Promise<void>,
  log: Logger,
  timeoutMs = DEAD_LETTER_LEDGER_TIMEOUT_MS,
): Promise<DeadLetterOutcome> {
  if (!ledger) {
    await write();
    return 'written';
  }
  let claim: DeadLetterClaim;
  try {
    claim = await answerWithin(() => ledger.claim(source), timeoutMs);
  } catch (error) {
    log.warn('dead letters written not known (Redis failed): writing this one, perhaps again', {
      ...source,
      reason: errorMessage(error),
      failure: errorCode(error),
    });
    await write();
    return 'written';
  }
  if (claim === 'written') return 'written-before';
  if (claim === 'busy') return 'busy';
  try {
    await write();
  } catch (error) {
    await answerWithin(() => ledger.release(source), timeoutMs).catch((failure: unknown) => {
      log.debug('dead-letter claim not given back: it lapses', { ...source, reason: errorMessage(failure) });
    });
    throw error;
  }
  await answerWithin(() => ledger.written(source), timeoutMs).catch((error: unknown) => {
    // The claim lapses, and a later reader writes the letter once more.
    log.warn('dead letter written but not marked so (Redis failed): it may be written again', {
      ...source,
      reason: errorMessage(error),
    });
  });
  return 'written';
}
