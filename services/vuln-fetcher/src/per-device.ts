import type { DeviceBatch, DeviceRecord, EnrichedDevice, VulnerabilitySummary } from '@urs/contracts';
import { CallHealth, DefenderErrorCode } from '@urs/defender';
import type { Logger } from '@urs/logging';
import { errorCode, errorMessage, isInfrastructureFault } from '@urs/resilience';
import type { Counter } from '@urs/telemetry';
import { notHeld, type FetchError, type TenantEnrichment } from './enrichment';
import { throwIfStopping } from './interruption';
import { isTenantWideFailure, type VulnerabilitySource } from './sources';
import { summariseVulnerabilities } from './summarise';

export interface PerDeviceDeps {
  /** Per-device calls of one batch in flight at once (the shared limiter caps all replicas at 10). */
  concurrency: number;
  now: () => Date;
  /** `urs_vulnerability_fetches_total`, shared with the bulk side. */
  fetches: Counter;
}

/** Per-device enrichment: one call per device of the batch, and what the batch keeps of them for its next try. */
export interface PerDeviceEnrichment {
  /**
   * The batch enriched one device call at a time, `concurrency` at once. A failure of the whole tenant comes
   * back as `tenantFailure`; a fault of Redis or Kafka fails the batch (see `createEnrichHandler`).
   */
  enrich(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<TenantEnrichment>;
  /** Lets the batch's answered calls go once it is sent. */
  sent(batch: DeviceBatch): void;
}

/**
 * Devices whose answered calls are kept for their batch's next try, after a fault of Redis or Kafka failed
 * it (see `answered`), counted over all held batches; past it the batches touched longest ago are let go.
 * Counted in devices, not batches: held batches are retried in turn, so a cap of N batches evicted, with
 * N + 1 held, the very batch to be retried next, and every retry called Defender again for all its
 * devices. A summary with its 10 CVE ids and a 40-character machine id holds ~770 bytes of heap (measured
 * on Node 20), so the cap costs ~40 MB at most; most summaries hold fewer ids. 50,000 devices are 1,000
 * held batches of 50, or 100 of 500: a whole Redis outage's worth for a large fleet.
 */
const KEPT_DEVICES = 50_000;

/**
 * A held batch not tried again within this long (its partition moved to another replica, or it was
 * dead-lettered) is let go of, in milliseconds: its answers would only linger in memory. A held batch is
 * retried with a backoff capped well below it.
 */
const KEPT_FOR_MS = 15 * 60_000;

/**
 * Device calls of a batch failing in a row because Defender is down or throttles for longer than a call
 * waits: the tenant's outage, not the devices'. After this many the cycle's other devices are not asked
 * for (the rest of the batch, and the cycle's later batches, as after a credentials failure), so one
 * tenant's outage does not hold the 10 shared slots for each of its devices' retries and timeouts. The
 * Defender client counts its attempts too (CallHealth): a call it holds back stops the cycle's calls at once.
 */
const OUTAGE_AFTER_FAILURES = 10;
const OUTAGE_CODES: ReadonlySet<string> = new Set([
  DefenderErrorCode.UNAVAILABLE,
  DefenderErrorCode.THROTTLED,
]);

export function createPerDeviceEnrichment(deps: PerDeviceDeps): PerDeviceEnrichment {
  const { now, fetches } = deps;
  /**
   * Per batch (`tenantId/cycleId/batchIndex`), the devices whose calls were answered before a fault of Redis
   * or Kafka failed it, when the last of them was (`at`) and when the batch last came (`touchedAt`, in
   * milliseconds): its next try here asks only for the others, so an outage does not spend the tenant's
   * quota (1,500 calls an hour) on answers already had. Dropped once the batch is sent, once it has not come
   * for KEPT_FOR_MS, or, touched longest ago first, while more than KEPT_DEVICES devices are kept. Ordered by
   * `touchedAt` (a batch that comes again moves to the end).
   */
  const answered = new Map<
    string,
    { summaries: Map<string, VulnerabilitySummary>; at: Date; touchedAt: number }
  >();
  /** The devices kept in `answered`, over all its batches. */
  let keptDevices = 0;

  function letGo(key: string): void {
    const kept = answered.get(key);
    if (kept === undefined) return;
    keptDevices -= kept.summaries.size;
    answered.delete(key);
  }

  /**
   * Lets go of the batches kept for longer than KEPT_FOR_MS, and of the ones touched longest ago while more
   * than KEPT_DEVICES devices are kept. Each batch tried here looks, so a batch that never comes again does
   * not stay in memory for long after the outage.
   */
  function evict(at: number): void {
    for (const [oldest, kept] of answered) {
      if (keptDevices <= KEPT_DEVICES && at - kept.touchedAt <= KEPT_FOR_MS) return;
      letGo(oldest);
    }
  }

  /** The batch's answered calls from an earlier try, taken out of `answered` while the batch runs. */
  function takeAnswered(key: string): { summaries: Map<string, VulnerabilitySummary>; at: Date } | undefined {
    if (answered.size === 0) return undefined;
    evict(now().getTime());
    const kept = answered.get(key);
    letGo(key);
    return kept;
  }

  /** Keeps a batch's answered calls until it is sent (see `answered`). */
  function keepAnswered(key: string, summaries: Map<string, VulnerabilitySummary>, at: Date): void {
    letGo(key);
    const touchedAt = now().getTime();
    answered.set(key, { summaries, at, touchedAt });
    keptDevices += summaries.size;
    evict(touchedAt);
  }

  async function perDevice(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<TenantEnrichment> {
    const devices: EnrichedDevice[] = new Array(batch.devices.length);
    const batchKey = `${batch.tenantId}/${batch.cycleId}/${batch.batchIndex}`;
    const kept = takeAnswered(batchKey);
    const summaries = kept?.summaries ?? new Map<string, VulnerabilitySummary>();
    let collectedAt = kept?.at ?? now();
    let tenantFailure: FetchError | undefined;
    /** A fault of Redis or Kafka met by a call: the batch stops, and fails with it. */
    let fault: { error: unknown } | undefined;
    let next = 0;
    // Calls failing one after the other for Defender's own reasons, not the device's.
    let outageRun = 0;
    async function worker(): Promise<void> {
      for (let index = next++; index < batch.devices.length; index = next++) {
        if (signal?.aborted || fault) return;
        const machine = batch.devices[index] as DeviceRecord;
        // No call of the tenant's quota for a device Microsoft holds no vulnerabilities of.
        const unheld = notHeld(machine);
        if (unheld) {
          devices[index] = { machine, vulnerabilities: null, fetchError: unheld };
          fetches.inc({ mode: 'per-device', outcome: 'not-held' });
          continue;
        }
        const had = summaries.get(machine.id);
        if (had) {
          devices[index] = { machine, vulnerabilities: had };
          continue;
        }
        if (tenantFailure) {
          devices[index] = { machine, vulnerabilities: null, fetchError: tenantFailure };
          fetches.inc({ mode: 'per-device', outcome: 'skipped' });
          continue;
        }
        try {
          const list = await source.machineVulnerabilities(machine.id, signal);
          const summary = summariseVulnerabilities(list, batch.cvssThreshold);
          devices[index] = { machine, vulnerabilities: summary };
          summaries.set(machine.id, summary);
          fetches.inc({ mode: 'per-device', outcome: 'ok' });
          outageRun = 0;
        } catch (error) {
          // Redis or Kafka failed the call (the shared call limiter, the tenant's quota counters): neither
          // the device's failure nor the tenant's. The batch's other calls stop, and the batch fails with it.
          if (isInfrastructureFault(error)) {
            fault ??= { error };
            return;
          }
          const fetchError = { code: errorCode(error), message: errorMessage(error) };
          // A hold-back speaks for the tenant's calls, not this device's: the cycle asks for no more of them.
          if (isTenantWideFailure(error) || CallHealth.isHeldBack(error)) tenantFailure ??= fetchError;
          else
            log.warn('device vulnerabilities not fetched', {
              deviceId: machine.id,
              code: fetchError.code,
              reason: fetchError.message,
            });
          outageRun = OUTAGE_CODES.has(fetchError.code) ? outageRun + 1 : 0;
          if (outageRun >= OUTAGE_AFTER_FAILURES)
            tenantFailure ??= {
              code: fetchError.code,
              message:
                `Microsoft Defender failed ${outageRun} device calls in a row (${fetchError.message}); ` +
                `the tenant's other devices of this cycle are not asked for, the next cycle tries again`,
            };
          devices[index] = { machine, vulnerabilities: null, fetchError };
          fetches.inc({ mode: 'per-device', outcome: 'failed' });
        }
        // No heartbeat here: the batch's own interval heartbeats, and waiting on the broker's answer between
        // two calls would keep this worker's next call from its slot.
        collectedAt = now();
      }
    }
    const workers = Math.max(1, Math.min(deps.concurrency, batch.devices.length));
    await Promise.all(Array.from({ length: workers }, () => worker()));
    if (summaries.size > 0) keepAnswered(batchKey, summaries, collectedAt);
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
    return { devices, collectedAt, ...(tenantFailure ? { tenantFailure } : {}) };
  }

  return {
    enrich: perDevice,
    sent: (batch) => letGo(`${batch.tenantId}/${batch.cycleId}/${batch.batchIndex}`),
  };
}
