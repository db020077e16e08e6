import {
  ASSESSMENT_MARGIN_MS,
  NOT_IN_EXPORT_SNAPSHOT,
  fromExportSnapshot,
  generatedAt,
  type DeviceBatch,
  type DeviceRecord,
  type EnrichedDevice,
  type ExportSnapshot,
  type VulnerabilitySummary,
} from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { anyAborted, errorCode, errorMessage, isInfrastructureFault } from '@urs/resilience';
import type { BulkVulnerabilityCache, LatestExport, TenantStore } from '@urs/store';
import type { Registry } from '@urs/telemetry';
import { changedDevices } from './corrections';
import { notHeld, unreadableInExport, type Enrichment } from './enrichment';
import { throwIfStopping } from './interruption';
import type { VulnerabilitySource } from './sources';
import { VulnerabilityFolder, emptySummary, foldRows, summaryJsonSlices } from './summarise';

export interface ExportReaderDeps {
  bulkCache: BulkVulnerabilityCache;
  tenants: Pick<TenantStore, 'updatePollingStatus'>;
  /** Bulk cycles read their export last (see EnrichHandlerDeps). Default false. */
  exportLast?: boolean;
  /** Ask which export snapshot Microsoft serves before reading it (see EnrichHandlerDeps). Default false. */
  skipUnchangedExport?: boolean;
  /** How long that question may take, in milliseconds. Default 30000. */
  snapshotProbeMs?: number;
  metrics: Registry;
  now: () => Date;
  /** The claim holder id of this process, whose claim a read runs under. */
  owner: string;
}

/** A tenant's bulk export: read from Microsoft under this process's claim and stored, or read back from Redis. */
export interface ExportReader {
  /**
   * The batch enriched from a done export: the cycle's own, or the tenant's latest, read at `collectedAt`
   * from the snapshot of `generatedTime` (when it was known). Null when the export is gone (evicted,
   * flushed, expired): its devices are not taken as absent from it.
   */
  fromExport(
    batch: DeviceBatch,
    cycleId: string,
    collectedAt: string,
    generatedTime: string | undefined,
  ): Promise<Enrichment | null>;
  /** Reads and stores the cycle's export; a failure of it is stored for the cycle's batches to find. */
  runBulkExport(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<void>;
  /** A bulk cycle's last batch that reads the cycle's export itself (see its definition). */
  lastFromExport(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    latest: LatestExport,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<Enrichment | null>;
}

/**
 * A device of a batch as an export gives it (`fromExportSnapshot`, the rule `urs defender devices` follows too).
 * A device the export lists only in rows that could not be read (its summary null) has none known, as per
 * device. A device the export does not list has no vulnerability, if the snapshot could list it: one first seen
 * after the snapshot was generated, or less than a day before (Microsoft's assessment of a new device takes
 * hours), may not be in it, so its criticalCves is missing until a snapshot that can list it (the cycle's own
 * export, read after its last batch, corrects it when that snapshot can).
 */
function fromSnapshot(
  machine: DeviceRecord,
  summary: VulnerabilitySummary | null | undefined,
  snapshot: ExportSnapshot,
  cvssThreshold: number,
): EnrichedDevice {
  const unheld = notHeld(machine);
  if (unheld) return { machine, vulnerabilities: null, fetchError: unheld };
  const exported = fromExportSnapshot(machine, summary, snapshot, () => emptySummary(cvssThreshold));
  if (exported.code === undefined) return { machine, vulnerabilities: exported.vulnerabilities };
  if (exported.code !== NOT_IN_EXPORT_SNAPSHOT)
    return { machine, vulnerabilities: null, fetchError: unreadableInExport() };
  const of =
    snapshot.generatedTime === undefined
      ? `generated no earlier than ${new Date(generatedAt(snapshot)).toISOString()}`
      : `of ${snapshot.generatedTime}`;
  return {
    machine,
    vulnerabilities: null,
    fetchError: {
      code: NOT_IN_EXPORT_SNAPSHOT,
      message:
        `the device was first seen at ${String(machine.firstSeen)}, after the bulk export's snapshot (${of}) ` +
        `or less than ${ASSESSMENT_MARGIN_MS / 3_600_000} hours before it, too recently for the snapshot to ` +
        'hold its assessment: its vulnerabilities come with a later snapshot, which Microsoft generates every 6 hours',
    },
  };
}

/**
 * What a bulk device is counted as in `urs_vulnerability_fetches_total`: `ok` with its vulnerabilities;
 * without them, why, as the per-device side counts a device it does not ask for (`not-held`: excluded from
 * vulnerability management; `not-in-snapshot`: first seen after the export's snapshot was generated, or less
 * than a day before), or `failed` (the export failed, or never came).
 */
function fetchOutcome(device: EnrichedDevice): 'ok' | 'not-held' | 'not-in-snapshot' | 'failed' {
  if (device.vulnerabilities !== null) return 'ok';
  if (device.fetchError?.code === NOT_IN_EXPORT_SNAPSHOT) return 'not-in-snapshot';
  return notHeld(device.machine) ? 'not-held' : 'failed';
}

/**
 * A bulk batch's devices counted by `fetchOutcome`: counted in `urs_vulnerability_fetches_total` once the
 * batch is recorded enriched (by the handler), not at each try of a batch held.
 */
export function bulkFetchOutcomes(devices: EnrichedDevice[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const device of devices) {
    const outcome = fetchOutcome(device);
    counts.set(outcome, (counts.get(outcome) ?? 0) + 1);
  }
  return counts;
}

/**
 * How long after the latest export was read a cycle may still skip reading its own as unchanged: Microsoft
 * regenerates the export every 6 hours.
 */
export const UNCHANGED_AT_MOST_MS = 6 * 60 * 60 * 1000;

/** A batch of a bulk cycle that reads its export last (the tenant's first such cycle reads it first). */
export const readsExportLast = (exportLast: boolean | undefined, batch: DeviceBatch): boolean =>
  exportLast === true && batch.vulnerabilityMode === 'bulk';

export function createExportReader(deps: ExportReaderDeps): ExportReader {
  const { now, owner } = deps;
  const snapshots = deps.metrics.counter(
    'urs_bulk_export_snapshots_total',
    "Bulk cycles that asked which export snapshot Microsoft serves before reading it, by outcome (unchanged: the latest export's, not read again; stale: the latest export's, but that one was read over 6 hours ago, read again; gone: the latest export's, but that one is gone from Redis, read again; changed; unknown: no answer in time, read anyway).",
  );

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
      return source.bulkFold
        ? await source.bulkFold(signal)
        : await foldRows((onRow) => source.bulkVulnerabilities(onRow, signal));
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
   * snapshot regenerated during the read is then taken for an older one, never the other way round: its
   * devices first seen since are taken as absent from it, and a later cycle reads it again), and, for a
   * cycle that may skip an unchanged snapshot, whether it is the one `latest` was read from; counted by
   * outcome, but for unchanged: the caller counts it once it knows `latest` is still there to read instead
   * (else `gone`). Asked whenever the source can: it tells which devices the export cannot list yet
   * (`fromSnapshot`). No time when no answer came within `snapshotProbeMs`: the export is then read and
   * stored without one.
   */
  async function snapshotOf(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    latest: LatestExport | undefined,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<{ generatedTime?: string; unchanged: boolean }> {
    if (!source.exportGeneratedTime) return { unchanged: false };
    const skips = deps.skipUnchangedExport === true && readsExportLast(deps.exportLast, batch);
    const probe = anyAborted([signal, AbortSignal.timeout(deps.snapshotProbeMs ?? 30_000)]);
    try {
      const generatedTime = await source.exportGeneratedTime(probe.signal);
      const same = skips && generatedTime === latest?.generatedTime;
      // The time is the files export's (`SoftwareVulnerabilitiesExport`); the export read is the JSON
      // `SoftwareVulnerabilitiesByMachine`, which the same time is taken to identify too. Bounded: once the
      // latest export was read a regeneration (every 6 hours) ago, it is read again whatever the time says.
      const stale = same && now().getTime() - Date.parse(latest?.collectedAt ?? '') > UNCHANGED_AT_MOST_MS;
      const unchanged = same && !stale;
      if (!unchanged) snapshots.inc({ outcome: stale ? 'stale' : 'changed' });
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
      // Every device with a row, software without a CVE included.
      devicesInExport: folder.size,
      durationMs: Date.now() - started,
    });
    await deps.tenants.updatePollingStatus(batch.tenantId, {
      vulnerabilityMode: 'bulk',
      note:
        'vulnerabilities come from one bulk export (SoftwareVulnerabilitiesByMachine) per cycle: the fleet is too ' +
        "large for one call per device within the tenant's quota in one poll interval " +
        `(last export ${collectedAt}: ${folder.size} devices in it` +
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
   * handled again here, takes its own claim back (see `createBulkEnrichment`); elsewhere, the claim lapses.
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
    // The snapshot the latest export was read from: the cycle's export would be the same, read again. Unless
    // that export is gone: then the cycle's own is read.
    const fromLatest = unchanged
      ? await fromExport(batch, latest.cycleId, now().toISOString(), generatedTime)
      : null;
    if (unchanged) snapshots.inc({ outcome: fromLatest === null ? 'gone' : 'unchanged' });
    if (fromLatest !== null) {
      log.info('bulk export unchanged, not read', { generatedTime, latestCycleId: latest.cycleId });
      await deps.bulkCache.release(batch.tenantId, batch.cycleId, owner);
      return { ...fromLatest, unchangedFrom: latest.cycleId };
    }
    const folder = await readExport(batch, source, log, signal);
    if (folder === null) return null;
    const collectedAt = now();
    const threshold = batch.cvssThreshold;
    const devices = batch.devices.map((machine) =>
      fromSnapshot(
        machine,
        folder.summaryOf(machine.id, threshold),
        { generatedTime, collectedAt },
        threshold,
      ),
    );
    const changed = deps.bulkCache.compare(
      batch.tenantId,
      latest.cycleId,
      summaryJsonSlices(folder, threshold),
    );
    return {
      devices,
      collectedAt,
      corrections: {
        changed: await changedDevices(changed),
        // The fold stays in memory until the export is stored, after the corrections are sent.
        summaries: async (ids) => new Map(ids.map((id) => [id, folder.summaryOf(id, threshold)])),
        snapshot: { generatedTime, collectedAt },
      },
      afterSend: () => storeExport(batch, folder, collectedAt.toISOString(), generatedTime, log, started),
    };
  }

  /** The batch enriched from a done export: the cycle's own, or the tenant's latest; null when it is gone. */
  async function fromExport(
    batch: DeviceBatch,
    cycleId: string,
    collectedAt: string,
    generatedTime: string | undefined,
  ): Promise<Enrichment | null> {
    const ids = batch.devices.map((machine) => machine.id);
    const summaries = await deps.bulkCache.read(batch.tenantId, cycleId, ids);
    if (summaries === null) return null;
    const snapshot = { generatedTime, collectedAt };
    const devices = batch.devices.map((machine) =>
      fromSnapshot(machine, summaries.get(machine.id), snapshot, batch.cvssThreshold),
    );
    return { devices, collectedAt: new Date(collectedAt) };
  }

  return { fromExport, runBulkExport, lastFromExport };
}
