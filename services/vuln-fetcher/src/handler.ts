import { deviceBatchMessage, isHandledAgain, type MessageHandler, type Publisher } from '@urs/bus';
import type { DeviceBatch, TenantRecord } from '@urs/contracts';
import { isSetupErrorCode } from '@urs/defender';
import type { Logger } from '@urs/logging';
import { UrsError, errorCode, errorMessage } from '@urs/resilience';
import { secretRecordUnreadable, type ReplicaKeyCheck } from '@urs/secrets';
import type { AnsweredCalls, BulkVulnerabilityCache, CycleStore, TenantStore } from '@urs/store';
import type { Registry } from '@urs/telemetry';
import { createBatchClaims } from './batch-claim';
import { createBulkEnrichment } from './bulk';
import { bulkFetchOutcomes, readsExportLast } from './bulk-export';
import {
  correctionBatchCount,
  correctionHeader,
  createCorrectionWait,
  enrichedHeader,
  listedSince,
  notInSnapshot,
  sendCorrections,
} from './corrections';
import { withoutExport, type Enrichment, type FetchError, type TenantEnrichment } from './enrichment';
import { createBatchInterruptions, type BatchInterruption } from './interruption';
import { createPerDeviceEnrichment } from './per-device';
import {
  ReplicaSecretKeyError,
  TenantAccessError,
  isTenantWideFailure,
  type SourceProvider,
} from './sources';
import { createTenantState } from './tenant';

export interface EnrichHandlerDeps {
  tenants: Pick<TenantStore, 'lookup' | 'updatePollingStatus'>;
  sources: SourceProvider;
  /**
   * Asked, when this replica's key does not open a tenant's stored secret (SECRET_UNREADABLE), whether it
   * opens other tenants' secrets: then the tenant's record is bad and it is the tenant's failure (status
   * written, the cycle going on without vulnerabilities); else the replica's key is wrong and the batch is
   * held. Default: none, always the replica's fault.
   */
  replicaKey?: ReplicaKeyCheck;
  bulkCache: BulkVulnerabilityCache;
  /**
   * Where a per-device batch's answered calls are kept until it is sent (`createAnsweredCalls`, on the same
   * Redis client as `cycles`): its next try, here or on the replica that takes it over, asks Defender only
   * for the devices not answered yet.
   */
  answers: AnsweredCalls;
  /**
   * Where a bulk cycle's correction batches are added to its total, and its enriched batches counted (the
   * corrections wait for the earlier batches) with the devices they sent as not in the export's snapshot
   * (the cycle's own export may list them), and a bulk cycle held open while its export is read. Every
   * batch, of either mode, is recorded as enriched once it is produced, and a batch found recorded (as its
   * claim is asked for) is not enriched again. A batch is enriched under its claim (`claimBatch`, renewed while
   * it runs, given back when it ends), so that two replicas given it at once (a rebalance while it runs) do
   * not both ask Defender for its devices: the second waits, then skips it once the first sent it, or takes
   * it over once the first gave the claim back unsent (stopped, failed) or let it lapse (died).
   */
  cycles: Pick<
    CycleStore,
    | 'addCorrections'
    | 'enriched'
    | 'enrichedOrLostBatches'
    | 'get'
    | 'notInSnapshot'
    | 'holdOpen'
    | 'claimBatch'
    | 'renewBatchClaim'
    | 'releaseBatchClaim'
    | 'lost'
  >;
  /**
   * Bulk cycles read their export last: a batch is enriched at once from the tenant's latest export, and
   * the cycle's own export is read with its last batch, which is followed by correction batches for the
   * devices whose summary the new export changed. A tenant's first bulk cycle (no latest export) reads
   * its export first, as without this. Default false.
   */
  exportLast?: boolean;
  /**
   * With `exportLast`, a bulk cycle asks which export snapshot Microsoft serves before it reads its export
   * (the source's `exportGeneratedTime`) and stores the answer with the export; a later cycle that gets the
   * same answer as the tenant's latest export was read from reads nothing, if that export was read at most
   * 6 hours ago (`UNCHANGED_AT_MOST_MS`): its last batch is enriched from that export too, which stays the
   * latest. Default false.
   */
  skipUnchangedExport?: boolean;
  /**
   * How long that question may take (a token, the tenant's quota for it and one of the shared call slots
   * included) before the export is read anyway, in milliseconds. Default 30000: under load the slots alone
   * may keep a call waiting for seconds, and the export's pages would wait for them too.
   */
  snapshotProbeMs?: number;
  /**
   * How long a bulk cycle's corrections wait for the cycle's earlier batches to be enriched (on any
   * replica) or recorded lost, in milliseconds: then the last batch fails retryably (CORRECTIONS_WAITING),
   * its export stored, and from its CORRECTION_TRIES-th try on they go anyway (see `createCorrectionWait`).
   * Default 30000; 0 does not wait.
   */
  correctionWaitMs?: number;
  publisher: Publisher;
  /** `urs.devices-enriched`. */
  topic: string;
  logger: Logger;
  metrics: Registry;
  /** Per-device calls of one batch in flight at once (the shared limiter caps all replicas at 10). */
  concurrency: number;
  /** How long a batch waits for another replica's bulk export of its cycle, in milliseconds. */
  bulkWaitMs: number;
  /** How long a bulk export claim holds before another replica may take over, in milliseconds. */
  bulkClaimMs: number;
  /** Longest a bulk cycle is held open while its export is read, from its start, ms (see BulkDeps). */
  bulkCycleMaxMs?: number;
  /** Pause between two looks at another replica's bulk export, in milliseconds. */
  bulkPollMs?: number;
  /** How long a batch claim lasts unless renewed, in milliseconds. Default BATCH_CLAIM_MS (60000). */
  batchClaimMs?: number;
  /** Pause between two looks at a batch another replica holds, in milliseconds. Default 1000. */
  batchClaimPollMs?: number;
  /**
   * How long a batch waits for its tenant's record missing from the rebuilt tenant store before it fails
   * (TENANT_UNKNOWN, not retryable: dead-lettered, never sent on without vulnerabilities), in milliseconds.
   * Default 30000. The registrar sends a record to `urs.tenants` before it writes it to Redis, and the poller
   * polls the tenants it reads from `urs.tenants`: a new tenant's first batch may come before its record is in
   * Redis. The wait is in the handler, heartbeating. While the store is not rebuilt
   * (Redis lost its data, the registrar has not written the records back) the batch does not wait: it fails
   * with TENANTS_NOT_REBUILT and the bus holds it until the rebuild is done.
   */
  tenantWaitMs?: number;
  /** Pause between two looks for a missing tenant record, in milliseconds. Default 1000. */
  tenantPollMs?: number;
  now?: () => Date;
  /**
   * Aborted when the service stops (the runtime's `stopping`, once the runner is stopping): calls in
   * flight give up and the batch fails, so it is not committed and another replica (or this one,
   * restarted) handles it whole. Default: never aborted. A message's own `signal` (the runner gave it
   * up) does the same for that batch.
   */
  signal?: AbortSignal;
}

/** Cycles whose held batches (this replica's key not opening the secret) were logged at error, at most. */
const LOGGED_KEY_CYCLES = 1000;

/** How often a running batch heartbeats, in milliseconds (KafkaJS's default heartbeat interval). */
const HEARTBEAT_EVERY_MS = 3_000;

/** The summaries of a try without corrections of its own: its correction batches go empty, asking none. */
const noSummaries = async (): Promise<Map<string, undefined>> => new Map();

/**
 * How long a tenant's latest export is kept for its next cycle: two poll intervals (the next cycle may
 * start late and take long) plus the two hours a cycle's own export is kept.
 */
const latestKeepMs = (record: TenantRecord): number =>
  2 * record.defender.pollIntervalMinutes * 60_000 + 2 * 60 * 60_000;

/**
 * Enriches a device batch with each device's vulnerability summary and emits it, keeping the batch's
 * shape and cycle header. A device whose vulnerabilities cannot be fetched goes on with
 * `vulnerabilities: null` and the reason (a 404 too: the listing alone decides when a device is gone): a
 * missing signal never holds the cycle back. A failure of the tenant as a whole (credentials, consent) stops its calls for the
 * cycle, an outage of its API for `OUTAGE_HOLD_BACK_MS`, and is written to its status; a tenant disabled
 * during its cycle is not called, and its batches are recorded lost. A fault of Redis or Kafka
 * (`isInfrastructureFault`: the shared call limiter, the quota counters, the export cache) is neither: the
 * batch fails with it, nothing of it is sent and no status is written, and the bus holds it until the
 * dependency is back; sent on, its devices would be scored without their vulnerabilities and their scores
 * published over their real ones.
 */
export function createEnrichHandler(deps: EnrichHandlerDeps): MessageHandler<DeviceBatch> {
  const now = deps.now ?? (() => new Date());
  const fetches = deps.metrics.counter(
    'urs_vulnerability_fetches_total',
    'Device vulnerability lookups, by mode and outcome (ok, failed, skipped; reused: a per-device answer an earlier try of the batch had, not asked for again; not-held: a device excluded from vulnerability management, not asked for or not taken from the export; not-in-snapshot: a device first seen after the bulk export was generated, or less than a day before; not-found: a per-device call answered 404, the device sent on without vulnerabilities).',
  );
  // Served at 0 from the start: UrsVulnerabilityFetchesFailing's share of failed and skipped devices would
  // otherwise miss a process's first batch of them (increase() counts nothing before a series' first sample).
  for (const [mode, outcomes] of [
    ['per-device', ['ok', 'failed', 'skipped']],
    ['bulk', ['ok', 'failed']],
  ] as const)
    for (const outcome of outcomes) fetches.init({ mode, outcome });
  const batches = deps.metrics.counter('urs_enriched_batches_total', 'Device batches enriched, by mode.');
  const redelivered = deps.metrics.counter(
    'urs_enriched_batches_skipped_total',
    'Device batches delivered again after their enriched batch was produced: not enriched again, by mode.',
  );
  const tenant = createTenantState({
    tenants: deps.tenants,
    tenantWaitMs: deps.tenantWaitMs,
    tenantPollMs: deps.tenantPollMs,
    now,
  });
  const perDevice = createPerDeviceEnrichment({
    concurrency: deps.concurrency,
    answers: deps.answers,
    now,
    fetches,
  });
  const bulk = createBulkEnrichment({
    bulkCache: deps.bulkCache,
    tenants: deps.tenants,
    exportLast: deps.exportLast,
    skipUnchangedExport: deps.skipUnchangedExport,
    snapshotProbeMs: deps.snapshotProbeMs,
    bulkWaitMs: deps.bulkWaitMs,
    bulkClaimMs: deps.bulkClaimMs,
    bulkPollMs: deps.bulkPollMs,
    cycles: deps.cycles,
    bulkCycleMaxMs: deps.bulkCycleMaxMs,
    metrics: deps.metrics,
    now,
  });
  const corrected = deps.metrics.counter(
    'urs_bulk_corrections_total',
    "Devices of bulk cycles corrected after the cycle's own export, having been enriched from the latest one.",
  );
  const earlierEnriched = createCorrectionWait({
    cycles: deps.cycles,
    correctionWaitMs: deps.correctionWaitMs,
    bulkPollMs: deps.bulkPollMs,
  });
  const readsLast = (batch: DeviceBatch): boolean => readsExportLast(deps.exportLast, batch);
  const batchClaims = createBatchClaims({
    cycles: deps.cycles,
    claimMs: deps.batchClaimMs,
    pollMs: deps.batchClaimPollMs,
    renewEveryMs: HEARTBEAT_EVERY_MS,
  });
  const interruption = createBatchInterruptions(deps.signal, deps.concurrency);
  /**
   * The cycles (`tenantId/cycleId`) a batch held for this replica's key was logged at error for: the bus
   * retries a held batch every few seconds for as long as the key stays wrong, and the bus itself warns of
   * held batches; the later tries of the cycle log at debug.
   */
  const keyHeldCycles = new Set<string>();
  function keyHeldOnce(cycleKey: string): boolean {
    if (keyHeldCycles.has(cycleKey)) return false;
    keyHeldCycles.add(cycleKey);
    if (keyHeldCycles.size > LOGGED_KEY_CYCLES) {
      const oldest = keyHeldCycles.values().next().value;
      if (oldest !== undefined) keyHeldCycles.delete(oldest);
    }
    return true;
  }

  return async (message) => {
    const batch = message.value;
    if (batch === null) return;
    // KafkaJS heartbeats only when asked: a batch waiting on its tenant's quota or on another replica's
    // bulk export must keep asking, or the group drops this member and the batch is handled twice.
    // A failed heartbeat (a rebalance under way) must not fail the batch: its effects are idempotent.
    const heartbeat = async (): Promise<void> => {
      await message.heartbeat?.().catch(() => undefined);
    };
    // The process stopping, or the runner giving this batch up (its partition moved to another replica).
    const interrupted = interruption(message.signal);
    const beating = setInterval(() => void heartbeat(), HEARTBEAT_EVERY_MS);
    // Whether the bus tries the batch again after this try fails so: the runner knows whether this is its last
    // attempt; outside the runner, only what the failure is tells.
    const handledAgain = (error: unknown): boolean =>
      message.handledAgainAfter?.(error) ?? isHandledAgain(error);
    const cycle = bulk.cycleOf(batch);
    const done = (async () => {
      if (!cycle) return handle(batch, heartbeat, interrupted, handledAgain);
      await bulk.afterPrevious(batch, cycle, deps.logger, interrupted.signal);
      try {
        await handle(batch, heartbeat, interrupted, handledAgain);
        bulk.tried(batch, cycle);
      } catch (error) {
        // Noted before the try ends: the next cycle, waiting for it to end, then waits for its next try.
        if (!interrupted.signal.aborted) bulk.tried(batch, cycle, error, handledAgain(error));
        throw error;
      }
    })();
    cycle?.running.add(done);
    try {
      await done;
    } finally {
      clearInterval(beating);
      interrupted.release();
      bulk.ended(batch);
      cycle?.running.delete(done);
    }
  };

  async function handle(
    batch: DeviceBatch,
    heartbeat: () => Promise<void>,
    interruption: BatchInterruption,
    handledAgain: (error: unknown) => boolean,
  ): Promise<void> {
    const log = deps.logger.child({
      tenantId: batch.tenantId,
      cycleId: batch.cycleId,
      batchIndex: batch.batchIndex,
    });
    // A batch whose enriched batch was produced already (a vuln-fetcher stopped between producing it and
    // committing its offset, a rebalance, a group that forgot its member) is not enriched again: that would
    // spend the tenant's Defender quota (50 calls a minute, 1,500 an hour) on up to 500 devices and send the
    // scorer a duplicate. One another replica (or another delivery of it here) works on is waited for, not
    // asked for twice. A Redis fault asking fails the batch, and the bus holds it: never dropped.
    const claim = await batchClaims.take(batch, heartbeat, log, interruption);
    if (claim === null) return skipRedelivered(batch, log);
    try {
      await enrichClaimed(batch, heartbeat, log, interruption.signal, handledAgain);
    } catch (error) {
      throw claim.failure(error);
    } finally {
      await claim.release();
    }
  }

  /** Enriches and sends the batch, this replica holding its claim. */
  async function enrichClaimed(
    batch: DeviceBatch,
    heartbeat: () => Promise<void>,
    log: Logger,
    signal: AbortSignal,
    handledAgain: (error: unknown) => boolean,
  ): Promise<void> {
    const cycleKey = `${batch.tenantId}/${batch.cycleId}`;
    const { record, waitedMs } = await tenant.record(batch, cycleKey, log, signal);
    if (record === null) throw tenantUnknown(batch, waitedMs, log);
    if (record.enabled === false) return disabledTenant(batch, log);
    const remembered = tenant.failureOf(cycleKey, record.revision);
    /** The record the batch's vulnerabilities were asked for with: none after a failure remembered. */
    const askedWith = remembered ? null : record;
    const enrichment: Enrichment = remembered
      ? await withoutCalls(batch, remembered, log, signal)
      : await enrichFrom(record, batch, cycleKey, heartbeat, log, signal);
    const header = enrichedHeader(batch, enrichment.collectedAt.toISOString());
    let toCorrect: string[] = [];
    const poller = header.totalBatches ?? batch.batchIndex + 1;
    if (enrichment.corrections) {
      // Each correction must reach the scorer after the device's own batch; and the devices the earlier
      // batches sent as not in the latest export's snapshot are known once those batches are enriched.
      if (!(await earlierEnriched(batch, heartbeat, log, signal))) {
        // Stored now, the export is not read again when the batch is tried again, and the earlier batches
        // still to come are enriched from it: on the batch's last attempt too (not `keepReadExport`'s
        // `handledAgain`), since the batch waited for is still to come and reads it.
        await enrichment.afterSend?.();
        throw new UrsError(
          'CORRECTIONS_WAITING',
          `an earlier batch of the cycle was not enriched within ${deps.correctionWaitMs ?? 30_000} ms: ` +
            "the corrections would reach the scorer before that batch's devices and be dropped; the last " +
            'batch is tried again',
          { canRetry: true },
        );
      }
      const unlisted = await deps.cycles.notInSnapshot(batch.tenantId, batch.cycleId);
      toCorrect = listedSince(enrichment.corrections, unlisted);
    }
    const correctionBatches = correctionBatchCount(toCorrect.length);
    // The publisher must count the corrections before the last batch can complete the cycle. A try of this
    // batch stopped after sending its corrections, before the export it read was stored, may have sent more
    // (this try read a newer export): the cycle keeps the larger count, and this try sends as many batches,
    // those past its own corrections empty, so that the publisher counts each index once and no more.
    const counted =
      correctionBatches > 0 || (readsLast(batch) && batch.lastBatch)
        ? await deps.cycles.addCorrections(batch.tenantId, batch.cycleId, correctionBatches)
        : 0;
    if (counted > 0) header.totalBatches = poller + counted;
    try {
      await deps.publisher.send(deps.topic, 'urs/enriched-batch', [
        deviceBatchMessage(batch.tenantId, header, enrichment.devices),
      ]);
      if (counted > 0) {
        // The correction batches made and sent a send's worth at a time, after the last batch, on the
        // tenant's partition.
        await sendCorrections(
          toCorrect,
          enrichment.corrections?.summaries ?? noSummaries,
          batch.cvssThreshold,
          (corrections, index) =>
            deviceBatchMessage(
              batch.tenantId,
              correctionHeader(batch, poller + index, header.collectedAt, corrections),
              [],
            ),
          (messages) => deps.publisher.send(deps.topic, 'urs/enriched-batch', messages),
          counted,
        );
      }
    } catch (error) {
      await keepReadExport(enrichment, error, log, handledAgain);
      throw error;
    }
    await enrichment.afterSend?.();
    if (readsLast(batch) && batch.lastBatch && askedWith !== null) {
      if (toCorrect.length > 0) {
        corrected.inc({}, toCorrect.length);
        log.info('bulk cycle corrected', { devices: toCorrect.length, batches: correctionBatches });
      }
      // Only now the next cycle reads from this export: a crash before it redoes the corrections. The
      // export it replaces goes after one poll interval, not after the cache's expiry (an export of a
      // 100,000-device fleet holds ~16 MB of Redis); a batch of the cycle before that comes again after
      // that is enriched from this one. A cycle that read nothing keeps the latest one longer. The cycle is
      // done with the export it pinned: one replaced already goes after one poll interval too.
      await deps.bulkCache.keepLatest(
        batch.tenantId,
        enrichment.unchangedFrom ?? batch.cycleId,
        {
          cvssThreshold: batch.cvssThreshold,
          azureTenantId: askedWith.defender.azureTenantId,
          cloud: askedWith.defender.cloud,
        },
        latestKeepMs(askedWith),
        askedWith.defender.pollIntervalMinutes * 60_000,
        batch.cycleId,
      );
    }
    // Recorded last, once everything the batch does is done: a crash or a fault before it leaves the batch to
    // be handled again whole, never skipped with part of it undone. The devices sent as not in the latest
    // export's snapshot go in the same write, for the cycle's corrections.
    const unlisted = readsLast(batch) && !batch.lastBatch ? notInSnapshot(enrichment.devices) : [];
    await deps.cycles.enriched(batch.tenantId, batch.cycleId, batch.batchIndex, unlisted);
    // Once per batch, not per try: a batch held (Kafka down) is tried again up to every few seconds. In bulk
    // every device (no call is made per device), per device those no call was made for.
    const uncounted =
      batch.vulnerabilityMode === 'bulk' ? bulkFetchOutcomes(enrichment.devices) : (enrichment.unasked ?? []);
    for (const [outcome, count] of uncounted) fetches.inc({ mode: batch.vulnerabilityMode, outcome }, count);
    // Only now its answered calls go: a fault recording it leaves them for its next try, which asks Defender
    // for none of them again.
    if (batch.vulnerabilityMode === 'per-device') await perDevice.sent(batch, log);
    batches.inc({ mode: batch.vulnerabilityMode });
    const failed = enrichment.devices.filter((device) => device.vulnerabilities === null).length;
    log.info('batch enriched', { devices: enrichment.devices.length, failed, mode: batch.vulnerabilityMode });
  }

  /**
   * Stores the export a bulk cycle's last batch read (`afterSend`) when Kafka did not take the batch or its
   * corrections: the bus holds the batch and tries it again every few seconds for as long as Kafka is away or
   * refuses it (an ACL missing, until an operator grants it), and each try read the whole export from
   * Microsoft again (its calls, its quota, minutes of folding). Stored, the tries correct from it, as after
   * CORRECTIONS_WAITING; it becomes the tenant's latest only once they are sent. Not stored (Redis failing
   * too), the next try reads it again, as before. Stored only when the bus tries the batch again
   * (`handledAgain`: the message's `handledAgainAfter`): one it dead-letters instead, at once (its contract or
   * Kafka refused it for good) or after this, its last attempt, would leave the export marked ready (~16 MB of
   * Redis at 100,000 devices), never the latest, until the cache's expiry.
   */
  async function keepReadExport(
    enrichment: Enrichment,
    sendError: unknown,
    log: Logger,
    handledAgain: (error: unknown) => boolean,
  ): Promise<void> {
    if (enrichment.afterSend === undefined || !handledAgain(sendError)) return;
    try {
      await enrichment.afterSend();
    } catch (error) {
      log.warn('bulk export not stored after its batch was not sent: the next try reads it again', {
        code: errorCode(error),
        reason: errorMessage(error),
        sendReason: errorMessage(sendError),
      });
    }
  }

  /**
   * The batch enriched from its tenant's source; a failure of the tenant as a whole (its credentials, its
   * consent, its stored secret, an outage of its API) written to its status and remembered for the cycle's
   * later batches (see `TenantState.failed`).
   */
  async function enrichFrom(
    record: TenantRecord,
    batch: DeviceBatch,
    cycleKey: string,
    heartbeat: () => Promise<void>,
    log: Logger,
    signal: AbortSignal,
  ): Promise<TenantEnrichment> {
    let result: TenantEnrichment;
    try {
      const source = deps.sources.forTenant(record);
      result =
        batch.vulnerabilityMode === 'bulk'
          ? await bulk.enrich(batch, record.defender, source, heartbeat, log, signal)
          : await perDevice.enrich(batch, source, log, signal);
    } catch (caught) {
      const error = await tenantFailureOf(caught, record, batch, cycleKey, log);
      if (!isTenantWideFailure(error)) throw error;
      const fetchError = { code: errorCode(error), message: errorMessage(error) };
      result = { ...(await withoutCalls(batch, fetchError, log, signal)), tenantFailure: fetchError };
    }
    if (result.tenantFailure) {
      if (isSetupErrorCode(result.tenantFailure.code)) deps.sources.forget(batch.tenantId);
      await tenant.failed(batch, cycleKey, record.revision, result.tenantFailure, log);
    }
    return result;
  }

  /**
   * What a failure to enrich the batch is: a secret this replica's key does not open is the tenant's failure
   * when the key opens other tenants' secrets (its stored record is bad), else it is this replica's and the
   * batch is held (thrown here); any other error is returned as it is.
   */
  async function tenantFailureOf(
    error: unknown,
    record: TenantRecord,
    batch: DeviceBatch,
    cycleKey: string,
    log: Logger,
  ): Promise<unknown> {
    if (!(error instanceof ReplicaSecretKeyError)) return error;
    if (await deps.replicaKey?.opensOthers(batch.tenantId, record.defender.clientSecret.keyId)) {
      // This key opens other tenants' secrets: the tenant's stored record is bad, not the key.
      const bad = secretRecordUnreadable({
        tenantId: batch.tenantId,
        revision: record.revision,
        service: 'vuln-fetcher',
        cause: error,
      });
      return new TenantAccessError(bad.code, bad.message, error);
    }
    // Not the tenant's failure: its status, its cycle and the cycle's other batches are left alone.
    const fields = { code: error.code, reason: error.message, variables: error.details['variables'] };
    const line =
      "batch held: this vuln-fetcher's URS_SECRET_KEY does not open the tenant's secret, and opens no " +
      "other tenant's";
    if (keyHeldOnce(cycleKey)) log.error(line, fields);
    else log.debug(line, fields);
    throw error;
  }

  /**
   * The batch's devices sent on without a call, their tenant having failed as a whole (`failure`), each
   * counted (once the batch is recorded enriched) as the batch that met the failure counts the
   * devices it no longer asks for: per device, the answers an earlier try of the batch had are sent
   * (`reused`), the others `skipped`; in bulk, `failed` (the export never came). A device Microsoft holds no
   * vulnerabilities of is `not-held` in either mode.
   */
  async function withoutCalls(
    batch: DeviceBatch,
    failure: FetchError,
    log: Logger,
    signal: AbortSignal,
  ): Promise<Enrichment> {
    if (batch.vulnerabilityMode === 'per-device') return perDevice.withoutCalls(batch, failure, log, signal);
    return withoutExport(batch, failure, now());
  }

  /**
   * The error of a batch whose tenant record stays missing, logged. Not sent on without vulnerabilities:
   * scored so (0 points for them under the default profile) and published, the devices' scores would drop
   * below their last ones over VMS, and the cycle's summary would say `complete`, for a fault of ours (or a
   * tenant deleted since). The summary contract has no reason field; its way to say "not complete" is
   * `partial`, with the devices never scored counted as `failed`: the batch dead-lettered is recorded lost,
   * the publisher closes the cycle so once its other batches are scored, and VMS keeps the devices' last
   * scores.
   */
  function tenantUnknown(batch: DeviceBatch, waitedMs: number, log: Logger): UrsError {
    const error = new UrsError(
      'TENANT_UNKNOWN',
      `no record of tenant ${batch.tenantId} in Redis after ${waitedMs} ms: ` +
        'deleted during the cycle, or its record on urs.tenants was never written to Redis by the registrar ' +
        '(its log says why); the batch is not ' +
        'enriched, and its cycle is closed as partial once its other batches are scored',
      { canRetry: false, details: { waitedMs } },
    );
    log.warn('tenant record still missing: batch dead-lettered, not sent on without vulnerabilities', {
      code: error.code,
      reason: error.message,
      devices: batch.devices.length,
    });
    return error;
  }

  /**
   * A batch of a tenant disabled since its cycle began: no call is made with its credentials (its client,
   * with its secret, is let go of), and nothing is sent. As for a batch whose tenant record is missing, its
   * devices are not sent on without vulnerabilities (the scorer still scores a disabled tenant's last cycle,
   * and their scores would drop over VMS); the batch is recorded lost, as its dead letter would be, without
   * one (disabling a tenant is no fault): the publisher counts its devices as failed and closes the cycle as
   * partial once its other batches are scored, and VMS keeps the devices' last scores. A later delivery of
   * the batch does the same, or, the tenant enabled again meanwhile, enriches it (its scored batch is then
   * no longer lost).
   */
  async function disabledTenant(batch: DeviceBatch, log: Logger): Promise<void> {
    deps.sources.forget(batch.tenantId);
    await deps.cycles.lost(
      batch.tenantId,
      batch.cycleId,
      batch.batchIndex,
      batch.devices.length,
      now().getTime(),
    );
    log.info('tenant disabled during its cycle: batch not enriched, recorded lost', {
      devices: batch.devices.length,
    });
  }

  /** Counts and logs a batch not enriched again, its enriched batch produced already. */
  function skipRedelivered(batch: DeviceBatch, log: Logger): void {
    redelivered.inc({ mode: batch.vulnerabilityMode });
    log.info('batch delivered again after it was enriched and sent: not enriched again', {
      devices: batch.devices.length,
      mode: batch.vulnerabilityMode,
    });
  }
}
