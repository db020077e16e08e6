import { randomUUID } from 'node:crypto';
import { deviceBatchMessage, type MessageHandler, type Publisher } from '@urs/bus';
import {
  cycleBatchHeader,
  type DeviceBatch,
  type EnrichedDevice,
  type DeviceRecord,
  type TenantRecord,
  type VulnerabilityCorrection,
  type VulnerabilitySummary,
} from '@urs/contracts';
import { CallHealth, DefenderErrorCode } from '@urs/defender';
import type { Logger } from '@urs/logging';
import {
  UrsError,
  errorCode,
  errorMessage,
  isInfrastructureFault,
  keepRenewing,
  sleep,
} from '@urs/resilience';
import type { BulkVulnerabilityCache, CycleStore, LatestExport, TenantStore } from '@urs/store';
import type { Registry } from '@urs/telemetry';
import {
  ReplicaSecretKeyError,
  isTenantWideCode,
  isTenantWideFailure,
  type SourceProvider,
  type VulnerabilitySource,
} from './sources';
import { VulnerabilityFolder, emptySummary, summariseVulnerabilities, summaryJsonSlices } from './summarise';

export interface EnrichHandlerDeps {
  tenants: Pick<TenantStore, 'get' | 'updateStatus'>;
  sources: SourceProvider;
  bulkCache: BulkVulnerabilityCache;
  /**
   * Where a bulk cycle's correction batches are added to its total, and its enriched batches counted (the
   * corrections wait for the earlier batches).
   */
  cycles: Pick<CycleStore, 'addCorrections' | 'enriched' | 'enrichedBatches'>;
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
   * same answer as the tenant's latest export was read from reads nothing: its last batch is enriched from
   * that export too, which stays the latest. Default false.
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
   * replica) before they go anyway, in milliseconds. Default 30000.
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
  /** Pause between two looks at another replica's bulk export, in milliseconds. */
  bulkPollMs?: number;
  /**
   * How long a batch waits for its tenant's record to come back to Redis before it fails (TENANT_UNKNOWN, not
   * retryable: dead-lettered, never sent on without vulnerabilities), in milliseconds. Default 30000. After
   * Redis lost its data the poller (its tenants in memory) emits batches before the registrar has rebuilt
   * Redis from `urs.tenants`, which takes seconds. The wait is in the handler, heartbeating.
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

type FetchError = { code: string; message: string };

interface Enrichment {
  devices: EnrichedDevice[];
  collectedAt: Date;
  /** A bulk cycle's last batch that read the export itself: the corrections that follow it. */
  corrections?: VulnerabilityCorrection[][];
  /** What is left to do once the batch and its corrections are produced (store the export). */
  afterSend?: () => Promise<void>;
  /**
   * A bulk cycle's last batch that found the tenant's latest export's snapshot unchanged: that export's
   * cycle, kept as the latest instead of the cycle's own (which was not read).
   */
  unchangedFrom?: string;
}

/** How often a running batch heartbeats, in milliseconds (KafkaJS's default heartbeat interval). */
const HEARTBEAT_EVERY_MS = 3_000;

/** Tenant-wide failures remembered per cycle, so later batches of the cycle do not call again. */
const REMEMBERED_FAILURES = 1000;

/**
 * Batches whose answered calls are kept for the batch's next try, after a fault of Redis or Kafka failed it
 * (see `answered`): at most 500 devices of ~150 bytes each, so ~2.5 MB in all.
 */
const KEPT_BATCHES = 32;

/** Devices per correction batch: a summary is ~150 bytes, so ~150 KB a message. */
const CORRECTIONS_PER_BATCH = 1000;

/**
 * How long a tenant's latest export is kept for its next cycle: two poll intervals (the next cycle may
 * start late and take long) plus the two hours a cycle's own export is kept.
 */
const latestKeepMs = (record: TenantRecord): number =>
  2 * record.defender.pollIntervalMinutes * 60_000 + 2 * 60 * 60_000;

/**
 * A signal aborted once any of `signals` is (at once when one already is), and `release` to stop following
 * them. Not AbortSignal.any: Node keeps every signal made from a long-lived one, such as the process's stop
 * signal (nodejs/node#55351).
 */
function anyAborted(signals: (AbortSignal | undefined)[]): { signal: AbortSignal; release: () => void } {
  const any = new AbortController();
  const abort = (): void => any.abort();
  for (const one of signals) {
    if (one?.aborted) abort();
    one?.addEventListener('abort', abort, { once: true });
  }
  return {
    signal: any.signal,
    release: () => {
      for (const one of signals) one?.removeEventListener('abort', abort);
    },
  };
}

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

/**
 * Enriches a device batch with each device's vulnerability summary and emits it, keeping the batch's
 * shape and cycle header. A device whose vulnerabilities cannot be fetched goes on with
 * `vulnerabilities: null` and the reason: a missing signal never holds the cycle back. A failure of the
 * tenant as a whole (credentials, consent) stops its calls for the cycle and is written to its status.
 * A fault of Redis or Kafka (`isInfrastructureFault`: the shared call limiter, the quota counters, the
 * export cache) is neither: the batch fails with it, nothing of it is sent and no status is written, and
 * the bus holds it until the dependency is back; sent on, its devices would be scored without their
 * vulnerabilities and their scores published over their real ones.
 */
export function createEnrichHandler(deps: EnrichHandlerDeps): MessageHandler<DeviceBatch> {
  const now = deps.now ?? (() => new Date());
  const owner = randomUUID();
  const failedCycles = new Map<string, FetchError>();
  /**
   * Per batch (`tenantId/cycleId/batchIndex`), the devices whose calls were answered before a fault of Redis
   * or Kafka failed it, and when the last of them was: its next try here asks only for the others, so an
   * outage does not spend the tenant's quota (1,500 calls an hour) on answers already had. Dropped once the
   * batch is sent; at most KEPT_BATCHES, the oldest let go.
   */
  const answered = new Map<string, { summaries: Map<string, VulnerabilitySummary>; at: Date }>();
  /**
   * The bulk exports this process is running, by `tenantId/cycleId`, aborted when one ends: a batch of the
   * same cycle waiting here wakes at once instead of at its next look at the cache.
   */
  const runningExports = new Map<string, AbortController>();
  const fetches = deps.metrics.counter(
    'urs_vulnerability_fetches_total',
    'Device vulnerability lookups, by mode and outcome (ok, failed, skipped).',
  );
  const batches = deps.metrics.counter('urs_enriched_batches_total', 'Device batches enriched, by mode.');
  const snapshots = deps.metrics.counter(
    'urs_bulk_export_snapshots_total',
    "Bulk cycles that asked which export snapshot Microsoft serves before reading it, by outcome (unchanged: the latest export's, not read again; changed; unknown: no answer in time, read anyway).",
  );
  const corrected = deps.metrics.counter(
    'urs_bulk_corrections_total',
    "Devices of bulk cycles corrected after the cycle's own export, having been enriched from the latest one.",
  );
  /**
   * The cycles whose export claim a batch handled here holds, with that batch's index: the claim is held
   * until the batch ends (a last batch that reads the export last stores it only after producing).
   */
  const claims = new Map<string, number>();
  /**
   * Per tenant, the bulk cycle whose batches this process handles now, with those in flight (waiting
   * included) and when they may start. The batches of the next cycle start once the previous cycle's are
   * done: its last batch moves the latest export they are enriched from, and two batches of a tenant run
   * at once, so the two cycles could overlap. One entry per bulk tenant, replaced by its next cycle.
   */
  const bulkCycles = new Map<
    string,
    { cycleId: string; ready: Promise<unknown>; running: Set<Promise<void>> }
  >();

  /**
   * The cycles (`tenantId/cycleId`) whose tenant record stayed missing for a whole `tenantWaitMs`: their
   * later batches look once and do not wait again (a deleted tenant's cycle would wait once per batch).
   */
  const missingRecords = new Set<string>();

  /**
   * The batch's tenant record, waited for up to `tenantWaitMs` when Redis does not hold it. Null when it is
   * still missing: the tenant was deleted during the cycle, or Redis was wiped and not rebuilt.
   */
  async function tenantRecord(
    batch: DeviceBatch,
    cycleKey: string,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<{ record: TenantRecord | null; waitedMs: number }> {
    const found = await deps.tenants.get(batch.tenantId);
    if (found !== null || missingRecords.has(cycleKey)) return { record: found, waitedMs: 0 };
    const waitMs = deps.tenantWaitMs ?? 30_000;
    const started = Date.now();
    log.warn('tenant record missing from Redis: waiting for the registrar to restore it', {
      code: 'TENANT_UNKNOWN',
      waitMs,
    });
    while (Date.now() - started < waitMs) {
      await sleepUntil(Math.min(deps.tenantPollMs ?? 1_000, waitMs - (Date.now() - started)), signal);
      throwIfStopping(signal);
      const record = await deps.tenants.get(batch.tenantId);
      if (record !== null) {
        log.info('tenant record back in Redis', { waitedMs: Date.now() - started });
        return { record, waitedMs: Date.now() - started };
      }
    }
    missingRecords.add(cycleKey);
    if (missingRecords.size > REMEMBERED_FAILURES) {
      const oldest = missingRecords.values().next().value;
      if (oldest !== undefined) missingRecords.delete(oldest);
    }
    return { record: null, waitedMs: Date.now() - started };
  }

  /** Keeps a batch's answered calls until it is sent (see `answered`). */
  function keepAnswered(key: string, summaries: Map<string, VulnerabilitySummary>, at: Date): void {
    answered.delete(key);
    answered.set(key, { summaries, at });
    if (answered.size > KEPT_BATCHES) {
      const oldest = answered.keys().next().value;
      if (oldest !== undefined) answered.delete(oldest);
    }
  }

  function rememberFailure(key: string, error: FetchError): void {
    failedCycles.set(key, error);
    if (failedCycles.size > REMEMBERED_FAILURES) {
      const oldest = failedCycles.keys().next().value;
      if (oldest !== undefined) failedCycles.delete(oldest);
    }
  }

  async function reportTenantFailure(batch: DeviceBatch, error: FetchError, log: Logger): Promise<void> {
    log.warn('tenant vulnerabilities unavailable', { code: error.code, reason: error.message });
    // Of this cycle: the poller, ending the cycle's listing after it, leaves it (`cycleListed`).
    await deps.tenants.updateStatus(batch.tenantId, {
      state: 'error',
      lastErrorCode: error.code,
      lastErrorMessage: error.message,
      lastErrorAt: now().toISOString(),
      lastErrorCycleId: batch.cycleId,
    });
  }

  /** Sleeps `ms`, or less when any of the signals is aborted. */
  async function sleepUntil(ms: number, ...signals: (AbortSignal | undefined)[]): Promise<void> {
    const wake = anyAborted(signals);
    try {
      await sleep(ms, wake.signal);
    } finally {
      wake.release();
    }
  }

  /**
   * A stop, or the runner giving the batch up (its partition moved to another replica), interrupted
   * the batch: fail it retryably, so its offset is not committed and it is handled again.
   */
  function throwIfStopping(signal: AbortSignal | undefined): void {
    if (signal?.aborted) {
      throw new UrsError(
        'STOPPING',
        'the batch was interrupted (stop or rebalance); it will be handled again',
        {
          canRetry: true,
        },
      );
    }
  }

  const missing = (machines: DeviceRecord[], error: FetchError): EnrichedDevice[] =>
    machines.map((machine) => ({ machine, vulnerabilities: null, fetchError: error }));

  async function perDevice(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<Enrichment & { tenantFailure?: FetchError }> {
    const devices: EnrichedDevice[] = new Array(batch.devices.length);
    const batchKey = `${batch.tenantId}/${batch.cycleId}/${batch.batchIndex}`;
    const kept = answered.get(batchKey);
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

  /** The export folded row by row on this thread: only each device's CVEs and their best CVSS stay in memory. */
  async function foldHere(
    source: VulnerabilitySource,
    signal: AbortSignal | undefined,
  ): Promise<VulnerabilityFolder> {
    const folder = new VulnerabilityFolder();
    await source.bulkVulnerabilities(
      (deviceId, vulnerability) => folder.add(deviceId, vulnerability),
      signal,
    );
    return folder;
  }

  /**
   * Reads the cycle's export under this process's claim. Null when it failed: then the cycle's batches
   * find it failed in the cache, and go on without vulnerabilities.
   */
  async function readExport(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<VulnerabilityFolder | null> {
    try {
      return source.bulkFold ? await source.bulkFold(signal) : await foldHere(source, signal);
    } catch (error) {
      await exportFailed(batch, error, log, signal);
      return null;
    }
  }

  async function exportFailed(
    batch: DeviceBatch,
    error: unknown,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    if (signal?.aborted) {
      // Stopping: another replica (or this one, restarted) takes the export over at once.
      await deps.bulkCache.release(batch.tenantId, batch.cycleId, owner);
      throwIfStopping(signal);
    }
    if (isInfrastructureFault(error)) {
      // Redis or Kafka failed the read or its storing (the call limiter, the quota counters, the cache): not
      // the export's failure. Marked failed, the cycle's batches would go on without vulnerabilities; the
      // batch fails instead and is held. Its claim lapses, or is taken back here when the batch comes again.
      log.debug('bulk export not read: Redis or Kafka failed it; the batch is held until they are back', {
        code: errorCode(error),
        reason: errorMessage(error),
      });
      throw error;
    }
    const fetchError = { code: errorCode(error), message: errorMessage(error) };
    log.warn('bulk export failed', fetchError);
    await deps.bulkCache.fail(batch.tenantId, batch.cycleId, fetchError);
  }

  /**
   * The `generatedTime` of the snapshot the cycle's export will be read from, asked before it is read (a
   * snapshot regenerated during the read is then taken for a newer one, never the other way round), and
   * whether it is the snapshot `latest` was read from; counted by outcome. No time when the cycle does not
   * ask, or no answer came within `snapshotProbeMs`: the export is then read and stored without one.
   */
  async function snapshotOf(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    latest: LatestExport | undefined,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<{ generatedTime?: string; unchanged: boolean }> {
    if (deps.skipUnchangedExport !== true || !readsExportLast(batch) || !source.exportGeneratedTime)
      return { unchanged: false };
    const probe = anyAborted([signal, AbortSignal.timeout(deps.snapshotProbeMs ?? 30_000)]);
    try {
      const generatedTime = await source.exportGeneratedTime(probe.signal);
      const unchanged = generatedTime === latest?.generatedTime;
      snapshots.inc({ outcome: unchanged ? 'unchanged' : 'changed' });
      return { generatedTime, unchanged };
    } catch (error) {
      throwIfStopping(signal);
      // Redis failed the question (its quota, its call slot): the export's read would meet it too.
      if (isInfrastructureFault(error)) throw error;
      snapshots.inc({ outcome: 'unknown' });
      log.warn('export snapshot unknown, reading the export', {
        code: errorCode(error),
        reason: errorMessage(error),
      });
      return { unchanged: false };
    } finally {
      probe.release();
    }
  }

  /** Stores a read export for the cycle's batches (marking it done), and notes it in the tenant's status. */
  async function storeExport(
    batch: DeviceBatch,
    folder: VulnerabilityFolder,
    collectedAt: string,
    generatedTime: string | undefined,
    log: Logger,
    started: number,
  ): Promise<void> {
    // Summaries are made one device at a time while the cache writes them in slices.
    await deps.bulkCache.save(
      batch.tenantId,
      batch.cycleId,
      folder.summaries(batch.cvssThreshold),
      collectedAt,
      generatedTime,
    );
    log.info('bulk export fetched', {
      devicesWithVulnerabilities: folder.size,
      durationMs: Date.now() - started,
    });
    await deps.tenants.updateStatus(batch.tenantId, {
      vulnerabilityMode: 'bulk',
      note:
        'vulnerabilities come from one bulk export (SoftwareVulnerabilitiesByMachine) per cycle: the fleet is too ' +
        "large for one call per device within the tenant's quota in one poll interval " +
        `(last export ${collectedAt}: ${folder.size} devices with vulnerabilities` +
        (generatedTime === undefined
          ? ')'
          : `; Microsoft's snapshot of ${generatedTime}, regenerated every 6 hours, not read again until then)`),
    });
  }

  async function runBulkExport(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const started = Date.now();
    const { generatedTime } = await snapshotOf(batch, source, undefined, log, signal);
    const folder = await readExport(batch, source, log, signal);
    if (folder === null) return;
    try {
      await storeExport(batch, folder, now().toISOString(), generatedTime, log, started);
    } catch (error) {
      await exportFailed(batch, error, log, signal);
    }
  }

  /**
   * A bulk cycle's last batch that reads the cycle's export itself, its earlier batches having been
   * enriched from the tenant's latest export: the batch from the export in memory, and the corrections of
   * every device the export changed, compared with the latest one in Redis. The export is stored only
   * after they are produced (`afterSend`): the cycle's summary does not wait for ~100,000 summaries to be
   * written. Until then the claim stays this process's: if anything fails on the way, the batch fails and,
   * handled again here, takes its own claim back (see `bulk`); elsewhere, the claim lapses.
   */
  async function lastFromExport(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    latest: LatestExport,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<Enrichment | null> {
    const started = Date.now();
    const { generatedTime, unchanged } = await snapshotOf(batch, source, latest, log, signal);
    if (unchanged) {
      // The snapshot the latest export was read from: the cycle's export would be the same, read again.
      log.info('bulk export unchanged, not read', { generatedTime, latestCycleId: latest.cycleId });
      await deps.bulkCache.release(batch.tenantId, batch.cycleId, owner);
      const enrichment = await fromExport(batch, latest.cycleId, now().toISOString());
      return { ...enrichment, unchangedFrom: latest.cycleId };
    }
    const folder = await readExport(batch, source, log, signal);
    if (folder === null) return null;
    const collectedAt = now();
    const threshold = batch.cvssThreshold;
    const devices = batch.devices.map((machine) => ({
      machine,
      vulnerabilities: folder.summaryOf(machine.id, threshold) ?? emptySummary(threshold),
    }));
    fetches.inc({ mode: 'bulk', outcome: 'ok' }, devices.length);
    const changed = deps.bulkCache.compare(
      batch.tenantId,
      latest.cycleId,
      summaryJsonSlices(folder, threshold),
    );
    return {
      devices,
      collectedAt,
      corrections: await correctionParts(changed, threshold),
      afterSend: () => storeExport(batch, folder, collectedAt.toISOString(), generatedTime, log, started),
    };
  }

  /** A batch of a bulk cycle that reads its export last (the tenant's first such cycle reads it first). */
  const readsExportLast = (batch: DeviceBatch): boolean =>
    deps.exportLast === true && batch.vulnerabilityMode === 'bulk';

  /**
   * The tenant's latest export if the batch may be enriched from it: another cycle's, counted at the
   * batch's CVSS threshold (after a change of threshold the cycle reads its own export first, instead of
   * correcting every device with a CVE).
   */
  function usable(batch: DeviceBatch, latest: LatestExport | null): LatestExport | null {
    if (latest === null || latest.cycleId === batch.cycleId) return null;
    return latest.cvssThreshold === batch.cvssThreshold ? latest : null;
  }

  /** The batch enriched from a done export: the cycle's own, or the tenant's latest. */
  async function fromExport(batch: DeviceBatch, cycleId: string, collectedAt: string): Promise<Enrichment> {
    const ids = batch.devices.map((machine) => machine.id);
    const summaries = await deps.bulkCache.read(batch.tenantId, cycleId, ids);
    fetches.inc({ mode: 'bulk', outcome: 'ok' }, ids.length);
    return {
      devices: batch.devices.map((machine) => ({
        machine,
        vulnerabilities: summaries.get(machine.id) ?? emptySummary(batch.cvssThreshold),
      })),
      collectedAt: new Date(collectedAt),
    };
  }

  /**
   * The corrections a bulk cycle's last batch brings when the cycle's own export is already stored
   * (another replica read it, or this batch comes again) and its earlier batches were enriched from
   * `latest`: every device whose summary the export changed.
   */
  async function storedCorrections(
    batch: DeviceBatch,
    latest: LatestExport,
  ): Promise<VulnerabilityCorrection[][]> {
    const stored = deps.bulkCache.scan(batch.tenantId, batch.cycleId);
    return correctionParts(
      deps.bulkCache.compare(batch.tenantId, latest.cycleId, stored),
      batch.cvssThreshold,
    );
  }

  /** Changed summaries as correction batches of CORRECTIONS_PER_BATCH devices. */
  async function correctionParts(
    changed: AsyncIterable<[string, string | null][]>,
    cvssThreshold: number,
  ): Promise<VulnerabilityCorrection[][]> {
    const empty = emptySummary(cvssThreshold);
    const parts: VulnerabilityCorrection[][] = [];
    let part: VulnerabilityCorrection[] = [];
    for await (const slice of changed) {
      for (const [deviceId, json] of slice) {
        part.push({ deviceId, vulnerabilities: json === null ? empty : (JSON.parse(json) as typeof empty) });
        if (part.length === CORRECTIONS_PER_BATCH) {
          parts.push(part);
          part = [];
        }
      }
    }
    if (part.length > 0) parts.push(part);
    return parts;
  }

  /** A correction batch's header: after the poller's batches, without totals (the last batch has them). */
  function correctionHeader(
    batch: DeviceBatch,
    batchIndex: number,
    collectedAt: string,
    corrections: VulnerabilityCorrection[],
  ) {
    const position = { batchIndex, lastBatch: false, totalBatches: undefined, totalDevices: undefined };
    return {
      ...cycleBatchHeader({ ...batch, ...position }),
      vulnerabilityMode: batch.vulnerabilityMode,
      collectedAt,
      corrections,
    };
  }

  /**
   * Waits until every batch of the cycle before `batch` was enriched and produced, on any replica, so each
   * correction follows its device's batch on the tenant's partition; after `correctionWaitMs` the
   * corrections go anyway (an earlier batch dead-lettered, say), and the log says so.
   */
  async function earlierEnriched(
    batch: DeviceBatch,
    heartbeat: () => Promise<void>,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const deadline = Date.now() + (deps.correctionWaitMs ?? 30_000);
    for (;;) {
      const enriched = await deps.cycles.enrichedBatches(batch.tenantId, batch.cycleId);
      if (enriched >= batch.batchIndex) return;
      if (Date.now() >= deadline) {
        log.warn('corrections sent before every earlier batch was enriched', {
          enriched,
          earlierBatches: batch.batchIndex,
        });
        return;
      }
      await heartbeat();
      await sleepUntil(Math.min(deps.bulkPollMs ?? 200, 50), signal);
      throwIfStopping(signal);
    }
  }

  async function bulk(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    heartbeat: () => Promise<void>,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<Enrichment & { tenantFailure?: FetchError }> {
    const deadline = Date.now() + deps.bulkWaitMs;
    // The cycle's last batch reads the export itself when the earlier ones were enriched from the latest.
    const readLast =
      readsExportLast(batch) && batch.lastBatch && batch.batchIndex > 0
        ? usable(batch, await deps.bulkCache.latest(batch.tenantId))
        : null;
    for (;;) {
      const state = await deps.bulkCache.state(batch.tenantId, batch.cycleId);
      if (state.state === 'ready') {
        const enrichment = await fromExport(batch, batch.cycleId, state.collectedAt);
        return readLast
          ? { ...enrichment, corrections: await storedCorrections(batch, readLast) }
          : enrichment;
      }
      // Pending, the export is read by the cycle's last batch (or by a first cycle's batch: then no latest).
      if (
        (state.state === 'absent' || state.state === 'pending') &&
        readsExportLast(batch) &&
        !batch.lastBatch
      ) {
        const latest = usable(batch, await deps.bulkCache.latest(batch.tenantId));
        if (latest !== null) return fromExport(batch, latest.cycleId, latest.collectedAt);
      }
      if (state.state === 'failed') {
        const fetchError = { code: state.code, message: state.message };
        fetches.inc({ mode: 'bulk', outcome: 'failed' }, batch.devices.length);
        return {
          devices: missing(batch.devices, fetchError),
          collectedAt: now(),
          ...(isTenantWideCode(state.code) ? { tenantFailure: fetchError } : {}),
        };
      }
      const cycleKey = `${batch.tenantId}/${batch.cycleId}`;
      // A claim of this process that no batch handled here holds was left by a failed try of a batch.
      const leftHere = state.state === 'pending' && state.owner === owner && !claims.has(cycleKey);
      if (
        leftHere ||
        (state.state === 'absent' &&
          (await deps.bulkCache.claim(batch.tenantId, batch.cycleId, owner, deps.bulkClaimMs)))
      ) {
        claims.set(cycleKey, batch.batchIndex);
        const ended = new AbortController();
        runningExports.set(cycleKey, ended);
        // The claim lasts URS_BULK_CLAIM_MS (so a crashed reader's lapses); a read that takes longer keeps
        // it, or the cycle's other batches would start a second read beside this one.
        const stopRenewing = keepRenewing(
          () => deps.bulkCache.renew(batch.tenantId, batch.cycleId, owner, deps.bulkClaimMs),
          Math.max(10, Math.floor(deps.bulkClaimMs / 3)),
          {
            onLost: () =>
              log.warn('bulk export claim lapsed while it was read', { claimMs: deps.bulkClaimMs }),
            onError: (error) => log.warn('bulk export claim not renewed', { reason: errorMessage(error) }),
          },
        );
        try {
          if (readLast) {
            const last = await lastFromExport(batch, source, readLast, log, signal);
            if (last !== null) return last;
          } else await runBulkExport(batch, source, log, signal);
        } finally {
          stopRenewing();
          runningExports.delete(cycleKey);
          ended.abort();
        }
        continue;
      }
      if (Date.now() >= deadline) {
        const fetchError = {
          code: 'BULK_EXPORT_TIMEOUT',
          message: `the cycle's bulk export was not ready within ${deps.bulkWaitMs} ms`,
        };
        fetches.inc({ mode: 'bulk', outcome: 'failed' }, batch.devices.length);
        return { devices: missing(batch.devices, fetchError), collectedAt: now() };
      }
      await heartbeat();
      await sleepUntil(deps.bulkPollMs ?? 200, signal, runningExports.get(cycleKey)?.signal);
      throwIfStopping(signal);
    }
  }

  /** The batch's entry in `bulkCycles`, a new one for a new cycle; none outside bulk cycles read last. */
  function bulkCycleOf(batch: DeviceBatch) {
    if (!readsExportLast(batch)) return undefined;
    let cycle = bulkCycles.get(batch.tenantId);
    if (cycle?.cycleId !== batch.cycleId) {
      const previous = [...(cycle?.running ?? [])].map((work) => work.catch(() => undefined));
      cycle = { cycleId: batch.cycleId, ready: Promise.all(previous), running: new Set<Promise<void>>() };
      bulkCycles.set(batch.tenantId, cycle);
    }
    return cycle;
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
    const interrupted = anyAborted([deps.signal, message.signal]);
    const beating = setInterval(() => void heartbeat(), HEARTBEAT_EVERY_MS);
    const cycleKey = `${batch.tenantId}/${batch.cycleId}`;
    const cycle = bulkCycleOf(batch);
    const done = (async () => {
      await cycle?.ready;
      await handle(batch, heartbeat, interrupted.signal);
    })();
    cycle?.running.add(done);
    try {
      await done;
    } finally {
      clearInterval(beating);
      interrupted.release();
      if (claims.get(cycleKey) === batch.batchIndex) claims.delete(cycleKey);
      cycle?.running.delete(done);
    }
  };

  async function handle(
    batch: DeviceBatch,
    heartbeat: () => Promise<void>,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const log = deps.logger.child({
      tenantId: batch.tenantId,
      cycleId: batch.cycleId,
      batchIndex: batch.batchIndex,
    });
    const cycleKey = `${batch.tenantId}/${batch.cycleId}`;
    let enrichment: Enrichment;
    const remembered = failedCycles.get(cycleKey);
    const lookup = remembered ? null : await tenantRecord(batch, cycleKey, log, signal);
    const record: TenantRecord | null = lookup?.record ?? null;
    if (remembered) {
      enrichment = { devices: missing(batch.devices, remembered), collectedAt: now() };
    } else if (record === null) {
      // Not sent on without vulnerabilities: scored so (0 points for them under the default profile) and
      // published, the devices' scores would drop below their last ones over VMS, and the cycle's summary
      // would say `complete`, for a fault of ours (or a tenant deleted since). The summary contract has no
      // reason field; its way to say "not complete" is `partial`, with the devices never scored counted as
      // `failed`: the publisher closes the cycle so at its deadline, and VMS keeps the devices' last scores.
      const error = new UrsError(
        'TENANT_UNKNOWN',
        `no record of tenant ${batch.tenantId} in Redis after ${lookup?.waitedMs ?? 0} ms: ` +
          'deleted during the cycle, or Redis lost its data and the registrar has not rebuilt it from ' +
          'urs.tenants (is the registrar running? its log says when the rebuild ends); the batch is not ' +
          'enriched, and its cycle is closed as partial at its deadline',
        { canRetry: false, details: { waitedMs: lookup?.waitedMs ?? 0 } },
      );
      log.warn('tenant record still missing: batch dead-lettered, not sent on without vulnerabilities', {
        code: error.code,
        reason: error.message,
        devices: batch.devices.length,
      });
      throw error;
    } else {
      let result: Enrichment & { tenantFailure?: FetchError };
      try {
        const source = deps.sources.forTenant(record);
        result =
          batch.vulnerabilityMode === 'bulk'
            ? await bulk(batch, source, heartbeat, log, signal)
            : await perDevice(batch, source, log, signal);
      } catch (error) {
        if (error instanceof ReplicaSecretKeyError) {
          // Not the tenant's failure: its status, its cycle and the cycle's other batches are left alone.
          log.error(
            "batch left for a retry: this vuln-fetcher's URS_SECRET_KEY does not open the tenant's secret",
            {
              code: error.code,
              reason: error.message,
              variables: error.details['variables'],
            },
          );
          throw error;
        }
        if (!isTenantWideFailure(error)) throw error;
        const fetchError = { code: errorCode(error), message: errorMessage(error) };
        result = {
          devices: missing(batch.devices, fetchError),
          collectedAt: now(),
          tenantFailure: fetchError,
        };
      }
      if (result.tenantFailure) {
        rememberFailure(cycleKey, result.tenantFailure);
        await reportTenantFailure(batch, result.tenantFailure, log);
      }
      enrichment = result;
    }
    const header = {
      ...cycleBatchHeader(batch),
      vulnerabilityMode: batch.vulnerabilityMode,
      collectedAt: enrichment.collectedAt.toISOString(),
    };
    const parts = enrichment.corrections ?? [];
    const poller = header.totalBatches ?? batch.batchIndex + 1;
    if (parts.length > 0) {
      // The publisher must count the corrections before the last batch can complete the cycle, and each
      // correction must reach the scorer after the device's own batch.
      await deps.cycles.addCorrections(batch.tenantId, batch.cycleId, parts.length);
      await earlierEnriched(batch, heartbeat, log, signal);
      header.totalBatches = poller + parts.length;
    }
    const messages = [
      deviceBatchMessage(batch.tenantId, header, enrichment.devices),
      ...parts.map((part, index) =>
        deviceBatchMessage(
          batch.tenantId,
          correctionHeader(batch, poller + index, header.collectedAt, part),
          [],
        ),
      ),
    ];
    await deps.publisher.send(deps.topic, 'urs/enriched-batch', messages);
    answered.delete(`${batch.tenantId}/${batch.cycleId}/${batch.batchIndex}`);
    await enrichment.afterSend?.();
    if (readsExportLast(batch) && !batch.lastBatch)
      await deps.cycles.enriched(batch.tenantId, batch.cycleId, batch.batchIndex);
    batches.inc({ mode: batch.vulnerabilityMode });
    if (readsExportLast(batch) && batch.lastBatch && record !== null) {
      const devices = parts.reduce((sum, part) => sum + part.length, 0);
      if (devices > 0) {
        corrected.inc({}, devices);
        log.info('bulk cycle corrected', { devices, batches: parts.length });
      }
      // Only now the next cycle reads from this export: a crash before it redoes the corrections. The
      // export it replaces goes after one poll interval, not after the cache's expiry (an export of a
      // 100,000-device fleet holds ~16 MB of Redis); a batch of the cycle before that comes again after
      // that is enriched from this one. A cycle that read nothing keeps the latest one longer.
      await deps.bulkCache.keepLatest(
        batch.tenantId,
        enrichment.unchangedFrom ?? batch.cycleId,
        batch.cvssThreshold,
        latestKeepMs(record),
        record.defender.pollIntervalMinutes * 60_000,
      );
    }
    const failed = enrichment.devices.filter((device) => device.vulnerabilities === null).length;
    log.info('batch enriched', { devices: enrichment.devices.length, failed, mode: batch.vulnerabilityMode });
  }
}
