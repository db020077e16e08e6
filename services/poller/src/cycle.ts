import { deviceBatchMessage, isKafkaRecordTooLarge, recordBytes, type Publisher } from '@urs/bus';
import { toDeviceRecord, type DeviceRecord, type TenantRecord } from '@urs/contracts';
import { chooseVulnerabilityMode } from '@urs/defender';
import type { Logger } from '@urs/logging';
import { UrsError, errorCode, errorMessage, retryPolicy, withRetry, type RetryPolicy } from '@urs/resilience';
import { parseProfile, profileHash } from '@urs/scoring';
import { secretRecordUnreadable, type ReplicaKeyCheck, type SecretSealer } from '@urs/secrets';
import type { CycleStore, PollLease } from '@urs/store';
import type { BatchFit } from './batch-fit';
import { isSetupErrorCode, type DefenderGateway } from './defender';

export interface CycleDeps {
  defender: DefenderGateway;
  sealer: SecretSealer;
  /**
   * Asked, when this replica's key does not open the tenant's stored secret (SECRET_UNREADABLE), whether it
   * opens other tenants' secrets: then the tenant's record is bad, and the cycle fails with the tenant's
   * SECRET_RECORD_UNREADABLE (a setup failure: status, backoff); else SECRET_UNREADABLE stays this replica's
   * fault. Default: none, always the replica's fault.
   */
  replicaKey?: ReplicaKeyCheck;
  publisher: Publisher;
  cycles: CycleStore;
  deviceBatchesTopic: string;
  /**
   * The batches the topic surely takes, shared by the replica's cycles (`createBatchFit`): a cycle's totals are
   * kept as pending before its last batch only when it fits (see `keepPending` in `runCycle`).
   */
  batchFit: BatchFit;
  /** Devices per batch message (≤ 500). */
  batchSize: number;
  /** Longest a cycle may stay open, ms: its deadline is start + min(interval, this). */
  maxCycleMs: number;
  logger: Logger;
  now?: () => number;
  /**
   * How a listing, or the cycle's merged devices, Redis fails to record is tried again while the lease holds.
   * Default: `LISTED_RETRY`.
   */
  listedRetry?: RetryPolicy;
  /**
   * How many enabled tenants, the cycle's own included, are registered with the tenant's Entra app
   * (`TenantTable.quotaSharers`): Microsoft counts the quota per app and Entra tenant, so the cycle plans its
   * vulnerability mode with its share of it. Default: the tenant alone.
   */
  quotaSharers?: (record: TenantRecord) => number;
}

export interface CycleInput {
  record: TenantRecord;
  cycleId: string;
  startedAt: number;
  intervalMs: number;
  /** The tenant's lease the cycle runs under: the totals kept before its last batch are written only under it. */
  lease: PollLease;
  /** Aborted when the lease is lost or the poller stops: nothing more is emitted. */
  signal: AbortSignal;
  /**
   * Whether this poller surely still holds the tenant's lease (`LeaseClock.held`). Asked right before every
   * batch is sent: past the lease's end another poller may have taken the tenant over, recorded this cycle as
   * abandoned and started listing it again, so no batch of it may follow.
   */
  leaseHeld: () => boolean;
  /**
   * Told each time Kafka takes one of the cycle's batches: the scheduler resumes the cycles it held while
   * Kafka refused them for want of an ACL (`BatchesRefused`) at the first batch taken, not at the end of a
   * cycle that may list for an hour.
   */
  batchTaken?: () => void;
  /**
   * Asked before each page of the listing: while Kafka refuses this replica's batches for want of an ACL
   * (another tenant's cycle met the refusal), the error the cycle stops with. Its own send would be refused
   * too, and each page spends the tenant's quota. Never for the cycle that finds out whether Kafka takes them
   * again (`BatchesRefused`).
   */
  batchesRefused?: () => Error | undefined;
}

export interface CycleResult {
  totalDevices: number;
  totalBatches: number;
  /** Records left out because they were merged into another device. */
  merged: number;
  vulnerabilityMode: 'per-device' | 'bulk';
  /** Why bulk mode was chosen, for the tenant's status. */
  note: string | null;
  listedAt: number;
}

/** The cycle stopped because its lease was lost (or may have lapsed) or the poller is stopping. */
export class CycleAbortedError extends UrsError {
  constructor() {
    super('CYCLE_ABORTED', 'the cycle stopped before it finished (lease lost or shutting down)', {
      canRetry: true,
    });
  }
}

/** A cycle's totals as the cycle store records them once its listing ended (`CycleStore.listed`). */
export type CycleTotals = Parameters<CycleStore['listed']>[2];

/**
 * Every batch of the cycle went out, and the cycle store did not record its listing (Redis away or failing
 * over, past `LISTED_RETRY` or the lease's end). Not a failed cycle: its batches are on their way, and the
 * last one tells the publisher its totals. Its `cause` is Redis's error; its `totals` are recorded at the
 * tenant's next try (see `CycleEnd.listedNotRecorded`).
 */
export class CycleListedNotRecordedError extends UrsError {
  constructor(
    cause: unknown,
    readonly totals: CycleTotals,
  ) {
    super('CYCLE_LISTED_NOT_RECORDED', `cycle listed, its totals not recorded: ${errorMessage(cause)}`, {
      canRetry: true,
      cause,
    });
  }
}

/**
 * How the record of a cycle's listing is tried again in place (it is idempotent): up to ~15 s, the time of a
 * Redis failover, and only while the lease surely holds.
 */
export const LISTED_RETRY = retryPolicy({ maxAttempts: 8, initialDelayMs: 250, maxDelayMs: 4_000 });

/**
 * How long after a cycle's listing stopped its batches already emitted may take to be scored before the
 * publisher closes it as partial, ms. The poller's next try comes no sooner than ~1.5 minutes after a failure
 * (`transientRetryAt`), and after a lost or lapsed lease as soon as the lease can be taken again, and then
 * lists the whole tenant again: the abandoned cycle's summary usually goes out first (VMS orders a tenant's
 * summaries by `cycleStartedAt`). The publisher closes it sooner when its last emitted batch is in. A cycle
 * whose poller died gets as long from the takeover (`abandonTakenOver`): its batches were let out before its
 * lease ended (`CycleInput.leaseHeld`), a send under way then landing within the producer's retries.
 */
export const ABANDONED_CYCLE_GRACE_MS = 60_000;

/** `<tenantId>-<start in ms, 13 digits>`: unique per tenant (one cycle at a time) and sortable. */
export function cycleIdOf(tenantId: string, startedAt: number): string {
  return `${tenantId}-${String(startedAt).padStart(13, '0')}`;
}

/**
 * The tenant's client secret. One this replica's key does not open (SECRET_UNREADABLE) is the tenant's bad
 * record when the key opens other tenants' secrets: blamed on the replica, the tenant was tried again every
 * 2 minutes for as long as the record stayed, and its status never told its admin to register the secret
 * again. A fault of Redis while other secrets are tried is thrown as it is (the replica's, not the tenant's).
 */
async function openSecret(deps: CycleDeps, record: TenantRecord): Promise<string> {
  try {
    return deps.sealer.open(record.defender.clientSecret, record.tenantId);
  } catch (error) {
    const sealed = record.defender.clientSecret;
    if (
      errorCode(error) !== 'SECRET_UNREADABLE' ||
      !(await deps.replicaKey?.opensOthers(record.tenantId, sealed.keyId))
    )
      throw error;
    throw secretRecordUnreadable({
      tenantId: record.tenantId,
      revision: record.revision,
      service: 'poller',
      cause: error,
    });
  }
}

/**
 * One polling cycle: the tenant's devices page by page (the Defender client gets the token), merged
 * records dropped (their surviving device is listed too, and must not be scored twice) and recorded for the
 * publisher to tombstone (`CycleStore.mergedDevices`, before the last batch), each device cut
 * down to its DeviceRecord (`toDeviceRecord`), batches of at most `batchSize` devices to
 * `urs.device-batches` keyed by tenant, the last one with the totals (an empty fleet is one empty last
 * batch), then the cycle's totals for the publisher.
 *
 * The vulnerability mode must hold for the whole cycle, and it depends on the fleet's size: devices are
 * held back until either the listing ends (the exact count; then per-device if it fits) or the count
 * passes what per-device calls can serve in one interval (then bulk, and batches flow from there on).
 * Only the devices the vuln-fetcher will ask for count: one excluded from vulnerability management costs
 * no call (`chooseVulnerabilityMode`, which `urs defender devices` chooses by too).
 * The cycle is begun in the cycle store with its first batch, so a cycle that never emitted (bad secret)
 * leaves no open cycle for the publisher to close, nor does one whose first send failed (withdrawn); one that
 * stops after a batch and before its last is recorded as abandoned, for the publisher to close it as partial at
 * once (see `abandon` below).
 */
export async function runCycle(deps: CycleDeps, input: CycleInput): Promise<CycleResult> {
  const now = deps.now ?? Date.now;
  const { record, cycleId, startedAt, signal } = input;
  const tenantId = record.tenantId;
  const log = deps.logger.child({ tenantId, cycleId });
  // The profile the cycle starts with: its batches' counts are made at its threshold, and the scorer scores
  // the whole cycle with it (by its hash) though the tenant changes its profile before the cycle ends.
  const profile = parseProfile(record.defender.riskProfile);
  const cycleProfile = {
    cvssThreshold: profile.operational.criticalCves.cvssThreshold,
    profileHash: profileHash(profile),
  };
  // Per-device calls must end within the cycle's deadline (its interval, at most URS_CYCLE_MAX_MS), not
  // within the interval: a daily tenant of 28,800 devices fitted a day's quota, took ~10 hours of calls,
  // and every one of its cycles was closed partial after an hour. Minutes of the interval's own unit.
  const cycleMs = Math.min(input.intervalMs, deps.maxCycleMs);
  // Tenants registered with one Entra app share its quota: the cycle plans with its share (`planVulnerabilityMode`).
  const sharers = deps.quotaSharers?.(record) ?? 1;
  const { perDeviceCapacity } = deps.defender.planMode(
    Number.MAX_SAFE_INTEGER,
    record.defender.pollIntervalMinutes * (cycleMs / input.intervalMs),
    sharers,
  );
  const cycleStartedAt = new Date(startedAt).toISOString();
  const deadlineAt = new Date(startedAt + cycleMs).toISOString();

  const choice = chooseVulnerabilityMode(perDeviceCapacity);
  let begun = false;
  let emittedLast = false;
  let batchIndex = 0;
  let totalDevices = 0;
  /** The devices listed merged into another one, recorded before the last batch goes (see `emit`). */
  const merged: string[] = [];
  let mergedRecorded = false;
  let pending: DeviceRecord[] = [];

  /** Throws when the cycle must emit nothing more: aborted, or its lease may have lapsed. */
  function stopIfAborted(): void {
    if (signal.aborted || !input.leaseHeld()) throw new CycleAbortedError();
  }

  /** A write of the cycle's record in Redis, tried again in place while the lease holds (`listedRetry`). */
  function recordedWhileLeaseHolds(write: () => Promise<void>, what: string): Promise<void> {
    return withRetry(write, {
      policy: deps.listedRetry ?? LISTED_RETRY,
      signal,
      shouldRetry: () => input.leaseHeld(),
      onRetry: (error, attempt, delayMs) =>
        log.debug(`${what} not recorded: tried again`, { attempt, delayMs, reason: errorMessage(error) }),
    });
  }

  /** Throws when Kafka refuses the replica's batches: the listing stops before its next page. */
  function stopIfRefused(): void {
    const refused = input.batchesRefused?.();
    if (refused !== undefined) throw refused;
  }

  async function emit(devices: DeviceRecord[], last: boolean): Promise<void> {
    stopIfAborted();
    if (!begun) {
      await deps.cycles.begin({ tenantId, cycleId, startedAt: cycleStartedAt, deadlineAt });
      begun = true;
    }
    // Before the last batch, which may complete the cycle before its listing is recorded: its completion
    // tombstones the merged devices VMS holds. Tried again as the listing is (a failure would cost the whole
    // listing); never recorded, the cycle stops as abandoned, never completes without them. Once: the last
    // batch refused as too large goes in halves.
    if (last && merged.length > 0 && !mergedRecorded) {
      await recordedWhileLeaseHolds(
        () => deps.cycles.mergedDevices(tenantId, cycleId, merged),
        'merged devices',
      );
      mergedRecorded = true;
    }
    const header = {
      schemaVersion: 1 as const,
      tenantId,
      cycleId,
      cycleStartedAt,
      batchIndex,
      lastBatch: last,
      ...(last ? { totalBatches: batchIndex + 1, totalDevices } : {}),
      vulnerabilityMode: choice.mode ?? 'per-device',
      ...cycleProfile,
    };
    const message = deviceBatchMessage(tenantId, header, devices);
    const bytes = recordBytes({ key: message.key, value: message.json });
    const kept = last && (await keepPending(bytes));
    // Asked again: the cycle store's answer may have come after the lease's end.
    stopIfAborted();
    try {
      await deps.publisher.send(deps.deviceBatchesTopic, 'urs/device-batch', [message]);
    } catch (error) {
      if (!isKafkaRecordTooLarge(error)) throw error;
      deps.batchFit.refused(bytes);
      if (devices.length < 2) throw error;
      // Larger than the topic takes: sent in two halves instead, each a batch of its own (the cycle's batches
      // are numbered as they go, and counted at its last), and so on until they fit. Sent again whole, the
      // batch would be refused again, and the cycle, and each after it, would fail for good. One device alone
      // too large fails the cycle (RECORD_TOO_LARGE), the tenant's own: the other tenants' cycles go on.
      const half = Math.ceil(devices.length / 2);
      log.warn('device batch refused by Kafka as too large: sent in two', {
        batchIndex,
        devices: devices.length,
        reason: errorMessage(error),
      });
      // Totals kept for a last batch the topic had taken one as large as (its limit lowered since) count it as
      // the last: its halves are one batch more. Dropped before the first half goes (the last half keeps its
      // own): a poller that stopped after it left the next holder a count the publisher found complete without
      // the last half, whose devices were then never sent.
      if (kept) await deps.cycles.dropPendingListing(tenantId, cycleId);
      await emit(devices.slice(0, half), false);
      await emit(devices.slice(half), last);
      return;
    }
    deps.batchFit.taken(bytes);
    input.batchTaken?.();
    batchIndex++;
    emittedLast = last;
  }

  /** The cycle's totals as its listing ended (its last batch carries them), at `listedAt`. */
  function totalsAt(
    listedAt: number,
    totalBatches: number,
  ): CycleTotals & Pick<CycleResult, 'vulnerabilityMode' | 'note'> {
    const vulnerabilityMode = choice.mode ?? 'per-device';
    const fetchedDevices = choice.calledFor;
    const note =
      vulnerabilityMode === 'bulk'
        ? `bulk vulnerability export: ${fetchedDevices} devices exceed the ${perDeviceCapacity} per-device calls ` +
          `the API quota allows in a ${record.defender.pollIntervalMinutes}-minute interval` +
          (sharers > 1 ? `, the quota of its Entra app being shared by ${sharers} registrations` : '') +
          (fetchedDevices < totalDevices
            ? ` (${totalDevices - fetchedDevices} more, excluded from vulnerability management, cost no call)`
            : '')
        : null;
    return {
      totalBatches,
      totalDevices,
      listedAt: new Date(listedAt).toISOString(),
      vulnerabilityMode,
      note,
    };
  }

  /**
   * Records the totals as pending right before the last batch is sent: a poller that stops after the send and
   * before `listed` (killed, its lease lost) leaves them to the next holder of the lease, which ends the cycle
   * as listed from them instead of recording it abandoned and listing the tenant again at once (its quota spent
   * twice, a partial summary a minute later, the export of a bulk cycle read twice). A send that fails while
   * the poller lives records the cycle abandoned, which the next holder does not take the pending totals over.
   * Kept only for a last batch the topic surely takes (`BatchFit`, of `bytes`): one refused as too large after
   * them left them to a poller that took the tenant over meanwhile (the lease lapsed during the send) or after
   * (this one killed before it dropped them), and the cycle was listed from them, its last batch never sent.
   * Without them, a poller stopping after the send leaves the cycle to be redone, as one stopped mid-listing.
   * Written only while Redis holds the lease as this poller's (in the same step): a write that lands after the
   * lease ended (queued by the client while Redis was away) left the next holder totals of a batch that may
   * never be sent, and the cycle listed from them instead of redone. A Redis that fails or refuses here leaves
   * the cycle as before: the send goes on (the lease's clock tells whether it may). True when they were
   * kept (or may have been: a write that failed in its answer).
   */
  async function keepPending(bytes: number): Promise<boolean> {
    if (!deps.batchFit.fits(bytes)) {
      log.debug("cycle's totals not kept before its last batch: larger than any batch the topic took", {
        bytes,
      });
      return false;
    }
    try {
      if (await deps.cycles.listingPending(input.lease, cycleId, totalsAt(now(), batchIndex + 1)))
        return true;
      log.warn("cycle's totals not kept before its last batch: the lease is not this poller's in Redis");
      return false;
    } catch (error) {
      log.warn(
        "cycle's totals not kept before its last batch: a poller taking over before they are recorded lists it again",
        {
          reason: errorMessage(error),
        },
      );
      return true;
    }
  }

  /**
   * A cycle that stops after it emitted batches and before its last one is never listed in full: its poller
   * (or another) lists the tenant again in a new cycle. Recorded as abandoned, it is closed as partial within
   * seconds, with the devices it listed and never got scored counted as failed, instead of at its deadline (up
   * to an hour later, after the new cycle's summary, and as if nothing had failed). One begun whose first batch
   * was never sent (Kafka away past the producer's retries, the lease lost meanwhile) is withdrawn instead: it
   * owes VMS no summary, and a partial one with every device failed came for each retry of an outage. A batch
   * of it recorded already (its send failed only in its answer) makes it abandoned after all. A Redis that fails
   * here leaves it to its deadline.
   */
  async function abandon(error: unknown): Promise<void> {
    if (!begun || emittedLast) return;
    const at = now();
    const code = errorCode(error);
    try {
      const abandonment = {
        batches: batchIndex,
        devices: totalDevices,
        code,
        at: new Date(at).toISOString(),
      };
      if (batchIndex === 0 && (await deps.cycles.withdraw(tenantId, cycleId, abandonment))) {
        log.info('cycle withdrawn: none of its batches was sent', { code, totalDevices });
        return;
      }
      await deps.cycles.abandon(tenantId, cycleId, abandonment, at + ABANDONED_CYCLE_GRACE_MS);
      log.info('cycle abandoned before its listing ended', {
        code,
        emittedBatches: batchIndex,
        totalDevices,
      });
    } catch (failure) {
      log.warn('abandoned cycle not recorded: its deadline closes it', {
        code,
        reason: errorMessage(failure),
      });
    }
  }

  /** Emits full batches while more than one batch is pending (the last one waits for the end of the listing). */
  async function flushFull(): Promise<void> {
    // One copy of the remainder at the end, not one of everything still pending after each batch.
    let from = 0;
    while (pending.length - from > deps.batchSize) {
      await emit(pending.slice(from, from + deps.batchSize), false);
      from += deps.batchSize;
    }
    if (from > 0) pending = pending.slice(from);
  }

  /** Lists every device and emits its batches, the last one with the totals. */
  async function listAndEmit(client: ReturnType<DefenderGateway['forTenant']>): Promise<void> {
    try {
      for await (const page of client.listDevicePages(signal)) {
        stopIfAborted();
        stopIfRefused();
        for (const device of page.devices) {
          if (device.merged) {
            merged.push(device.machine.id);
            continue;
          }
          // Only what the scorer and VMS read travels on: the rest of the record stays here.
          const deviceRecord = toDeviceRecord(device.machine);
          pending.push(deviceRecord);
          totalDevices++;
          choice.count(deviceRecord);
        }
        if (choice.mode !== undefined) await flushFull();
      }
    } catch (error) {
      // What an administrator fixes without changing the record (consent granted in Entra, the app's roles)
      // must be seen at the next try: its token is asked for again, not the one kept that lacks the role.
      if (isSetupErrorCode(errorCode(error))) deps.defender.forget(tenantId);
      throw error;
    }
    stopIfAborted();
    choice.end();
    await flushFull();
    await emit(pending, true);
  }

  // The secret is opened every cycle (a record this key no longer opens fails here, as before), the client
  // only made when the gateway keeps none for this revision of the record.
  const clientSecret = await openSecret(deps, record);
  // Aborted meanwhile (the tenant deleted or disabled, which forgot its client): no client kept for it again.
  if (signal.aborted) throw new CycleAbortedError();
  const client = deps.defender.forTenant({ tenantId, revision: record.revision }, () => ({
    azureTenantId: record.defender.azureTenantId,
    clientId: record.defender.clientId,
    clientSecret,
    cloud: record.defender.cloud,
    region: record.defender.region,
  }));
  try {
    await listAndEmit(client);
  } catch (error) {
    await abandon(error);
    throw error;
  }
  const listedAt = now();
  // The mode and note too: a poller that stops before recording the cycle's end leaves them to the next.
  // Recorded even if the lease lapsed since the last batch: every batch went out under it, and the totals are
  // true (a cycle recorded abandoned by a poller that took the tenant over meanwhile gets its deadline back).
  // Tried again in place while the lease holds: failed at once, the cycle was ended as failed, listed again
  // minutes later, and closed partial.
  const totals = totalsAt(listedAt, batchIndex);
  const { vulnerabilityMode, note } = totals;
  try {
    await recordedWhileLeaseHolds(() => deps.cycles.listed(tenantId, cycleId, totals), 'cycle listing');
  } catch (error) {
    throw new CycleListedNotRecordedError(error, totals);
  }
  log.info('cycle listed', {
    totalDevices,
    totalBatches: batchIndex,
    merged: merged.length,
    vulnerabilityMode,
  });
  return { totalDevices, totalBatches: batchIndex, merged: merged.length, vulnerabilityMode, note, listedAt };
}
