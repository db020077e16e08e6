import type { DeviceBatch, DeviceRecord, EnrichedDevice, VulnerabilitySummary } from '@urs/contracts';
import { CallHealth, DefenderErrorCode } from '@urs/defender';
import type { Logger } from '@urs/logging';
import { errorCode, errorMessage, isInfrastructureFault } from '@urs/resilience';
import type { AnsweredCall, AnsweredCalls } from '@urs/store';
import type { Counter } from '@urs/telemetry';
import { notHeld, type FetchError, type TenantEnrichment } from './enrichment';
import { throwIfStopping } from './interruption';
import { forgetOldestCycle, OUTAGE_HOLD_BACK_MS } from './tenant';
import { isTenantWideFailure, type VulnerabilitySource } from './sources';
import { summariseVulnerabilities } from '@urs/contracts/vulnerabilities';

export interface PerDeviceDeps {
  /** Per-device calls of one batch in flight at once (the shared limiter caps all replicas at 10). */
  concurrency: number;
  /**
   * Where a batch's answered calls are kept until it is sent, so that its next try (after a fault of Redis or
   * Kafka, a stop or a crash, here or on the replica that takes it over) asks Defender only for the others:
   * an outage or a rolling deploy does not spend the tenant's quota (1,500 calls an hour) on answers had.
   */
  answers: AnsweredCalls;
  now: () => Date;
  /** `urs_vulnerability_fetches_total`, shared with the bulk side. */
  fetches: Counter;
}

/** Per-device enrichment: one call per device of the batch, the answers kept for the batch's next try. */
export interface PerDeviceEnrichment {
  /**
   * The batch enriched one device call at a time, `concurrency` at once, the calls answered by its earlier
   * tries not made again. A failure of the whole tenant comes back as `tenantFailure`; a fault of Redis or
   * Kafka fails the batch (see `createEnrichHandler`).
   */
  enrich(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<TenantEnrichment>;
  /**
   * The batch without a call, its tenant having failed as a whole (`failure`, met by an earlier batch of the
   * cycle, or by this one as its source was made): the answers its earlier tries had are sent (counted
   * `reused`), its other devices go on without vulnerabilities with `failure` as the reason (counted
   * `skipped`, or `not-held`). A fault of Redis reading the answers fails the batch.
   */
  withoutCalls(
    batch: DeviceBatch,
    failure: FetchError,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<TenantEnrichment>;
  /** Lets the batch's answered calls go once it is sent (a failure only logged: they expire). */
  sent(batch: DeviceBatch, log: Logger): Promise<void>;
}

/**
 * Device calls of a batch failing in a row because Defender is down, throttles for longer than a call
 * waits, or something in front of it (a proxy, a firewall, a gateway) refuses them (REQUEST_REJECTED: its
 * 403 without MDE's error body, or another 4xx every device draws), or every device answers 404 while no
 * call of the tenant's cycle has been answered (a path Microsoft does not serve: `isNotFound`): the tenant's
 * outage, not the devices'.
 * After this many the batch's other devices are not asked for, nor the cycle's later batches' for
 * `OUTAGE_HOLD_BACK_MS` (then they ask again: a passing outage does not cost the tenant its cycle's
 * vulnerabilities), so one tenant's outage does not hold the 10 shared slots for each of its devices' retries
 * and timeouts. The Defender client counts its attempts too (CallHealth): a call it holds back stops the
 * batch's calls at once.
 */
const OUTAGE_AFTER_FAILURES = 10;
const OUTAGE_CODES: ReadonlySet<string> = new Set([
  DefenderErrorCode.UNAVAILABLE,
  DefenderErrorCode.NOT_FOUND,
  DefenderErrorCode.THROTTLED,
  DefenderErrorCode.REQUEST_REJECTED,
]);

/**
 * How long an answered call waits to be written to Redis with the others answered meanwhile, in ms: one
 * write every this long instead of one per call (a batch's 10 calls in flight answer ~200 calls a second).
 * A crash loses at most this long of answers, which its batch's next try asks Defender for again.
 */
const KEEP_EVERY_MS = 100;

/** The source of a batch that makes no call (`withoutCalls`): its tenant's failure is set from the start. */
const NO_CALLS: VulnerabilitySource = {
  machineVulnerabilities: () => Promise.reject(new Error('no device call is made for a tenant that failed')),
  bulkVulnerabilities: () => Promise.reject(new Error('no export is read for a tenant that failed')),
};

/**
 * Whether a device call answered 404 (DEFENDER_NOT_FOUND): the device deleted since the listing, one Microsoft
 * has not begun to assess yet (newly onboarded, discovered but not onboarded), or every call's path wrong. Its
 * vulnerabilities are a missing signal, not the device's failure: it stays in its batch without them (the
 * listing alone decides when it is tombstoned), counted `not-found`, not warned of. Such answers in a row are
 * an outage of the tenant's calls as the others are (a path every call misses is seen in its status) only
 * while none of its cycle's calls has been answered: once one has, the path is right, and a 404 is its
 * device's, of which a batch may hold many in a row (devices not onboarded are asked for as any other).
 */
const isNotFound = (error: unknown): boolean => errorCode(error) === DefenderErrorCode.NOT_FOUND;

export function createPerDeviceEnrichment(deps: PerDeviceDeps): PerDeviceEnrichment {
  const { answers, now, fetches } = deps;
  /** The cycles (`tenantId/cycleId`) a device call of which was answered here: their 404s are the devices'. */
  const answeredCycles = new Set<string>();

  async function perDevice(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    log: Logger,
    signal: AbortSignal | undefined,
    remembered?: FetchError,
  ): Promise<TenantEnrichment> {
    const devices: EnrichedDevice[] = new Array(batch.devices.length);
    const { tenantId, cycleId, batchIndex } = batch;
    // A fault of Redis reading them fails the batch (held): going on without them would ask Defender again
    // for every device an earlier try had answered, and the calls need Redis (the shared limiter) anyway.
    const kept = await answers.read(tenantId, cycleId, batchIndex);
    const summaries = kept?.summaries ?? new Map<string, VulnerabilitySummary>();
    const cycleKey = `${tenantId}/${cycleId}`;
    /** Whether a call of the tenant's cycle has been answered (by this try, an earlier one, or another batch). */
    let answered = summaries.size > 0 || answeredCycles.has(cycleKey);
    let collectedAt = kept ? new Date(kept.collectedAt) : now();
    /** Whether Redis failed to keep an answer of this try (warned of once). */
    let unkept = false;
    /** Answered calls not yet written: written together `KEEP_EVERY_MS` after the first of them. */
    let unwritten: AnsweredCall[] = [];
    let writeTimer: NodeJS.Timeout | undefined;
    /**
     * Writes the answered calls not yet written, not waited for: a call's slot does not wait on Redis, and a
     * stop does not wait for Redis away. Sent in order on the Redis client the cycle store shares, and written
     * at the latest as the try ends, the writes reach Redis before the batch's claim is given back (and before
     * its answers are let go once it is sent). A failed write is neither the devices' failure nor a reason to
     * hold the batch: this try has the answers, and a fault of Redis that matters to the batch fails its next
     * call (the shared limiter) or its record as sent; only a later try of the batch asks Defender for those
     * devices again.
     */
    function writeKept(): void {
      clearTimeout(writeTimer);
      writeTimer = undefined;
      if (unwritten.length === 0) return;
      const calls = unwritten;
      unwritten = [];
      answers.keep(tenantId, cycleId, batchIndex, calls).catch((error: unknown) => {
        if (unkept) return;
        unkept = true;
        log.warn('answered device calls not kept in Redis: a later try of the batch asks for them again', {
          devices: calls.length,
          code: errorCode(error),
          reason: errorMessage(error),
        });
      });
    }
    function keep(deviceId: string, summary: VulnerabilitySummary, at: Date): void {
      unwritten.push({ deviceId, summary, at: at.toISOString() });
      writeTimer ??= setTimeout(writeKept, KEEP_EVERY_MS).unref();
    }
    /** The devices of this try no call was made for, by outcome: counted once the batch is sent. */
    const unasked = new Map<string, number>();
    const notAsked = (outcome: string): void => void unasked.set(outcome, (unasked.get(outcome) ?? 0) + 1);
    let tenantFailure: FetchError | undefined = remembered;
    /** A fault of Redis or Kafka met by a call: the batch stops, and fails with it. */
    let fault: { error: unknown } | undefined;
    let next = 0;
    // Calls failing one after the other for Defender's own reasons (or answering 404 while none was
    // answered), not the device's.
    let outageRun = 0;
    async function worker(): Promise<void> {
      for (let index = next++; index < batch.devices.length; index = next++) {
        if (signal?.aborted || fault) return;
        const machine = batch.devices[index] as DeviceRecord;
        // No call of the tenant's quota for a device Microsoft holds no vulnerabilities of.
        const unheld = notHeld(machine);
        if (unheld) {
          devices[index] = { machine, vulnerabilities: null, fetchError: unheld };
          notAsked('not-held');
          continue;
        }
        const had = summaries.get(machine.id);
        if (had) {
          devices[index] = { machine, vulnerabilities: had };
          notAsked('reused');
          continue;
        }
        if (tenantFailure) {
          devices[index] = { machine, vulnerabilities: null, fetchError: tenantFailure };
          notAsked('skipped');
          continue;
        }
        let summary: VulnerabilitySummary | undefined;
        try {
          const list = await source.machineVulnerabilities(machine.id, signal);
          summary = summariseVulnerabilities(list, batch.cvssThreshold);
          devices[index] = { machine, vulnerabilities: summary };
          summaries.set(machine.id, summary);
          fetches.inc({ mode: 'per-device', outcome: 'ok' });
          outageRun = 0;
          answered = true;
          answeredCycles.add(cycleKey);
          forgetOldestCycle(answeredCycles);
        } catch (error) {
          // Redis or Kafka failed the call (the shared call limiter, the tenant's quota counters): neither
          // the device's failure nor the tenant's. The batch's other calls stop, and the batch fails with it.
          if (isInfrastructureFault(error)) {
            fault ??= { error };
            return;
          }
          const fetchError = { code: errorCode(error), message: errorMessage(error) };
          // A hold-back speaks for the tenant's calls, not this device's: the batch asks for no more of them.
          if (isTenantWideFailure(error) || CallHealth.isHeldBack(error)) tenantFailure ??= fetchError;
          else if (!isNotFound(error))
            log.warn('device vulnerabilities not fetched', {
              deviceId: machine.id,
              code: fetchError.code,
              reason: fetchError.message,
            });
          const outage = OUTAGE_CODES.has(fetchError.code) && !(answered && isNotFound(error));
          outageRun = outage ? outageRun + 1 : 0;
          if (outageRun >= OUTAGE_AFTER_FAILURES)
            tenantFailure ??= {
              code: fetchError.code,
              message:
                `Microsoft Defender failed ${outageRun} device calls in a row (${fetchError.message}); ` +
                `the batch's other devices are not asked for, and the cycle's next batches ask again after ` +
                `${OUTAGE_HOLD_BACK_MS / 1000} s`,
            };
          devices[index] = { machine, vulnerabilities: null, fetchError };
          fetches.inc({ mode: 'per-device', outcome: isNotFound(error) ? 'not-found' : 'failed' });
        }
        // No heartbeat here: the batch's own interval heartbeats, and waiting on the broker's answer between
        // two calls would keep this worker's next call from its slot.
        collectedAt = now();
        if (summary) keep(machine.id, summary, collectedAt);
      }
    }
    const workers = Math.max(1, Math.min(deps.concurrency, batch.devices.length));
    try {
      await Promise.all(Array.from({ length: workers }, () => worker()));
    } finally {
      writeKept();
    }
    throwIfStopping(signal);
    if (fault) {
      // At debug: the bus warns of a held batch once per outage.
      log.debug('batch not enriched: Redis or Kafka failed a call; it is held until they are back', {
        code: errorCode(fault.error),
        reason: errorMessage(fault.error),
        answered: summaries.size,
        devices: batch.devices.length,
      });
      throw fault.error;
    }
    return { devices, collectedAt, unasked, ...(tenantFailure ? { tenantFailure } : {}) };
  }

  return {
    enrich: perDevice,
    withoutCalls: (batch, failure, log, signal) => perDevice(batch, NO_CALLS, log, signal, failure),
    async sent(batch, log) {
      await answers.forget(batch.tenantId, batch.cycleId, batch.batchIndex).catch((error: unknown) =>
        log.debug('answered device calls of the sent batch not let go: they expire', {
          code: errorCode(error),
          reason: errorMessage(error),
        }),
      );
    },
  };
}
