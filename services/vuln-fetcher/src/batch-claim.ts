import { randomUUID } from 'node:crypto';
import type { DeviceBatch } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { UrsError, errorMessage, keepRenewing } from '@urs/resilience';
import type { BatchClaimAnswer, CycleStore } from '@urs/store';
import { sleepUntil, throwIfStopping, type BatchInterruption } from './interruption';

// One vuln-fetcher at a time enriches a given device batch: a rebalance while a batch runs gives it to a new
// owner while the replica that had it still works on it (until it is done or aborted), and both asked Defender
// for its up-to-500 devices, spending the tenant's quota (1,500 calls an hour) twice and sending it twice.

/**
 * How long a batch claim lasts unless renewed, in milliseconds: the shared call limiter's job expiration.
 * A slot passes from call to call for at most the slot hand-off (URS_DEFENDER_SLOT_HANDOFF_MS, at most 20 s)
 * plus one call (the 30 s request timeout), which stays below that expiration, and a call still running then
 * is stopped: once a holder stops renewing (its process died or froze, or Redis no longer answers it), its
 * calls for the batch's devices have ended, at the latest, when its claim lapses, so the replica taking the
 * batch over never asks Defender beside them. Longer would only keep the batch waiting behind a dead holder.
 */
export const BATCH_CLAIM_MS = 60_000;

/** How often a replica waiting for another one's batch looks again, in milliseconds. */
const BATCH_CLAIM_POLL_MS = 1_000;

export interface BatchClaimDeps {
  cycles: Pick<CycleStore, 'claimBatch' | 'renewBatchClaim' | 'releaseBatchClaim'>;
  /** How long a claim lasts unless renewed, ms. Default BATCH_CLAIM_MS. */
  claimMs?: number;
  /** Pause between two looks at a batch another replica holds, ms. Default 1000. */
  pollMs?: number;
  /** How often a held claim is renewed at most, ms (the handler's heartbeat). */
  renewEveryMs: number;
}

/** A batch claimed here, renewed until it is given back. */
export interface BatchClaim {
  /** The error to fail the batch with: the claim's loss when it was lost, else `error` as it is. */
  failure(error: unknown): unknown;
  /**
   * Stops renewing and gives the claim back (a failure only logged: the claim lapses by itself), without
   * waiting for Redis when the batch was interrupted.
   */
  release(): Promise<void>;
}

export interface BatchClaims {
  /**
   * Claims the batch, waiting while another replica (or another delivery of it here) holds it: null when it
   * was enriched meanwhile (a redelivery, skipped), else the claim, taken once the holder gave it back or
   * let it lapse. The wait heartbeats, and ends at once, failing the batch retryably, when `interruption`
   * aborts; a claim lost while the batch runs (it lapsed and another replica took it) aborts `interruption`.
   */
  take(
    batch: DeviceBatch,
    heartbeat: () => Promise<void>,
    log: Logger,
    interruption: BatchInterruption,
  ): Promise<BatchClaim | null>;
}

export function createBatchClaims(deps: BatchClaimDeps): BatchClaims {
  const claimMs = deps.claimMs ?? BATCH_CLAIM_MS;
  const renewEveryMs = Math.max(10, Math.min(deps.renewEveryMs, Math.floor(claimMs / 3)));
  /** This process's claims: taken again at once when a failed try of a batch could not give it back. */
  const holder = randomUUID();
  /** The batches (`tenantId/cycleId/batchIndex`) handled here now, which another delivery here waits for. */
  const working = new Set<string>();

  async function take(
    batch: DeviceBatch,
    heartbeat: () => Promise<void>,
    log: Logger,
    interruption: BatchInterruption,
  ): Promise<BatchClaim | null> {
    const { signal } = interruption;
    const key = `${batch.tenantId}/${batch.cycleId}/${batch.batchIndex}`;
    let waitedSince: number | undefined;
    for (;;) {
      throwIfStopping(signal);
      if (!working.has(key)) {
        const answer = await claimHere(batch, key);
        if (answer === 'enriched') return null;
        if (answer === 'claimed') {
          if (waitedSince !== undefined)
            log.info('batch claim given back or lapsed without the batch enriched: enriched here', {
              waitedMs: Date.now() - waitedSince,
            });
          return held(batch, key, log, interruption);
        }
      }
      if (waitedSince === undefined) {
        waitedSince = Date.now();
        log.info('batch being enriched by another replica, or another delivery of it here: waiting for it', {
          devices: batch.devices.length,
        });
      }
      await heartbeat();
      await sleepUntil(deps.pollMs ?? BATCH_CLAIM_POLL_MS, signal);
    }
  }

  /**
   * Asks Redis for the batch's claim, the batch marked as handled here first (and kept so when claimed):
   * another delivery of it here, asking at once, would be given the same claim (it is this process's).
   */
  async function claimHere(batch: DeviceBatch, key: string): Promise<BatchClaimAnswer> {
    working.add(key);
    let answer: BatchClaimAnswer | undefined;
    try {
      answer = await deps.cycles.claimBatch(batch.tenantId, batch.cycleId, batch.batchIndex, holder, claimMs);
      return answer;
    } finally {
      if (answer !== 'claimed') working.delete(key);
    }
  }

  function held(batch: DeviceBatch, key: string, log: Logger, interruption: BatchInterruption): BatchClaim {
    let lost = false;
    const { tenantId, cycleId, batchIndex } = batch;
    // Renewed as often as the heartbeat, so the claim outlasts a batch waiting minutes on its tenant's quota. A
    // claim Redis no longer has (a wipe, a failover to an empty replica) is taken again: only one another
    // replica holds is lost.
    const renew = async (): Promise<boolean> =>
      (await deps.cycles.renewBatchClaim(tenantId, cycleId, batchIndex, holder, claimMs)) ||
      (await deps.cycles.claimBatch(tenantId, cycleId, batchIndex, holder, claimMs)) === 'claimed';
    const stopRenewing = keepRenewing(renew, renewEveryMs, {
      onLost: () => {
        if (lost) return;
        lost = true;
        log.warn('batch claim lapsed and was taken by another replica: batch given up here', { claimMs });
        interruption.abort();
      },
      // At debug: Redis away fails every batch's calls too, and the bus warns of the batches it holds.
      onError: (error) => log.debug('batch claim not renewed', { reason: errorMessage(error) }),
    });
    return {
      failure: (error) =>
        lost
          ? new UrsError(
              'BATCH_CLAIM_LOST',
              'the batch claim lapsed and another replica took the batch over; tried again, the batch is ' +
                'skipped once that replica sent it',
              { canRetry: true },
            )
          : error,
      async release() {
        stopRenewing();
        working.delete(key);
        const givenBack = deps.cycles
          .releaseBatchClaim(tenantId, cycleId, batchIndex, holder)
          .catch((error: unknown) =>
            log.debug('batch claim not given back: it lapses', { reason: errorMessage(error) }),
          );
        // A stopped batch does not wait for Redis (its commands queue while it is away): the stop goes on.
        if (!interruption.signal.aborted) await givenBack;
      },
    };
  }

  return { take };
}
