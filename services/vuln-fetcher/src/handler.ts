import { randomUUID } from 'node:crypto';
import { deviceBatchMessage, type MessageHandler, type Publisher } from '@urs/bus';
import {
  cycleBatchHeader,
  type DeviceBatch,
  type EnrichedDevice,
  type DeviceRecord,
  type TenantRecord,
} from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { UrsError, errorCode, errorMessage, sleep } from '@urs/resilience';
import type { BulkVulnerabilityCache, TenantStore } from '@urs/store';
import type { Registry } from '@urs/telemetry';
import {
  isTenantWideCode,
  isTenantWideFailure,
  type SourceProvider,
  type VulnerabilitySource,
} from './sources';
import { VulnerabilityFolder, emptySummary, summariseVulnerabilities } from './summarise';

export interface EnrichHandlerDeps {
  tenants: Pick<TenantStore, 'get' | 'updateStatus'>;
  sources: SourceProvider;
  bulkCache: BulkVulnerabilityCache;
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
  now?: () => Date;
  /**
   * Aborted when the process stops: calls in flight give up and the batch fails retryably, so it is not
   * committed and another replica (or this one, restarted) handles it whole. Default: never aborted. A
   * message's own `signal` (the runner gave it up) does the same for that batch.
   */
  signal?: AbortSignal;
}

type FetchError = { code: string; message: string };

interface Enrichment {
  devices: EnrichedDevice[];
  collectedAt: Date;
}

/** How often a running batch heartbeats, in milliseconds (KafkaJS's default heartbeat interval). */
const HEARTBEAT_EVERY_MS = 3_000;

/** Tenant-wide failures remembered per cycle, so later batches of the cycle do not call again. */
const REMEMBERED_FAILURES = 1000;

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
 * Enriches a device batch with each device's vulnerability summary and emits it, keeping the batch's
 * shape and cycle header. A device whose vulnerabilities cannot be fetched goes on with
 * `vulnerabilities: null` and the reason: a missing signal never holds the cycle back. A failure of the
 * tenant as a whole (credentials, consent) stops its calls for the cycle and is written to its status.
 */
export function createEnrichHandler(deps: EnrichHandlerDeps): MessageHandler<DeviceBatch> {
  const now = deps.now ?? (() => new Date());
  const owner = randomUUID();
  const failedCycles = new Map<string, FetchError>();
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

  function rememberFailure(key: string, error: FetchError): void {
    failedCycles.set(key, error);
    if (failedCycles.size > REMEMBERED_FAILURES) {
      const oldest = failedCycles.keys().next().value;
      if (oldest !== undefined) failedCycles.delete(oldest);
    }
  }

  async function reportTenantFailure(tenantId: string, error: FetchError, log: Logger): Promise<void> {
    log.warn('tenant vulnerabilities unavailable', { code: error.code, reason: error.message });
    await deps.tenants.updateStatus(tenantId, {
      state: 'error',
      lastErrorCode: error.code,
      lastErrorMessage: error.message,
      lastErrorAt: now().toISOString(),
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
    let collectedAt = now();
    let tenantFailure: FetchError | undefined;
    let next = 0;
    async function worker(): Promise<void> {
      for (let index = next++; index < batch.devices.length; index = next++) {
        if (signal?.aborted) return;
        const machine = batch.devices[index] as DeviceRecord;
        if (tenantFailure) {
          devices[index] = { machine, vulnerabilities: null, fetchError: tenantFailure };
          fetches.inc({ mode: 'per-device', outcome: 'skipped' });
          continue;
        }
        try {
          const list = await source.machineVulnerabilities(machine.id, signal);
          devices[index] = { machine, vulnerabilities: summariseVulnerabilities(list, batch.cvssThreshold) };
          fetches.inc({ mode: 'per-device', outcome: 'ok' });
        } catch (error) {
          const fetchError = { code: errorCode(error), message: errorMessage(error) };
          if (isTenantWideFailure(error)) tenantFailure ??= fetchError;
          else log.warn('device vulnerabilities not fetched', { deviceId: machine.id, ...fetchError });
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
    throwIfStopping(signal);
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

  async function runBulkExport(
    batch: DeviceBatch,
    source: VulnerabilitySource,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const started = Date.now();
    try {
      const folder = source.bulkFold ? await source.bulkFold(signal) : await foldHere(source, signal);
      // Summaries are made one device at a time while the cache writes them in slices.
      const collectedAt = now().toISOString();
      await deps.bulkCache.save(
        batch.tenantId,
        batch.cycleId,
        folder.summaries(batch.cvssThreshold),
        collectedAt,
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
          `(last export ${collectedAt}: ${folder.size} devices with vulnerabilities)`,
      });
    } catch (error) {
      if (signal?.aborted) {
        // Stopping: another replica (or this one, restarted) takes the export over at once.
        await deps.bulkCache.release(batch.tenantId, batch.cycleId, owner);
        throwIfStopping(signal);
      }
      const fetchError = { code: errorCode(error), message: errorMessage(error) };
      log.warn('bulk export failed', fetchError);
      await deps.bulkCache.fail(batch.tenantId, batch.cycleId, fetchError);
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
    for (;;) {
      const state = await deps.bulkCache.state(batch.tenantId, batch.cycleId);
      if (state.state === 'ready') {
        const ids = batch.devices.map((machine) => machine.id);
        const summaries = await deps.bulkCache.read(batch.tenantId, batch.cycleId, ids);
        fetches.inc({ mode: 'bulk', outcome: 'ok' }, ids.length);
        return {
          devices: batch.devices.map((machine) => ({
            machine,
            vulnerabilities: summaries.get(machine.id) ?? emptySummary(batch.cvssThreshold),
          })),
          collectedAt: new Date(state.collectedAt),
        };
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
      if (
        state.state === 'absent' &&
        (await deps.bulkCache.claim(batch.tenantId, batch.cycleId, owner, deps.bulkClaimMs))
      ) {
        const ended = new AbortController();
        runningExports.set(cycleKey, ended);
        try {
          await runBulkExport(batch, source, log, signal);
        } finally {
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
    try {
      await handle(batch, heartbeat, interrupted.signal);
    } finally {
      clearInterval(beating);
      interrupted.release();
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
    const record: TenantRecord | null = remembered ? null : await deps.tenants.get(batch.tenantId);
    if (remembered) {
      enrichment = { devices: missing(batch.devices, remembered), collectedAt: now() };
    } else if (record === null) {
      const fetchError = {
        code: 'TENANT_UNKNOWN',
        message: `tenant ${batch.tenantId} is not registered (removed during the cycle?)`,
      };
      enrichment = { devices: missing(batch.devices, fetchError), collectedAt: now() };
    } else {
      let result: Enrichment & { tenantFailure?: FetchError };
      try {
        const source = deps.sources.forTenant(record);
        result =
          batch.vulnerabilityMode === 'bulk'
            ? await bulk(batch, source, heartbeat, log, signal)
            : await perDevice(batch, source, log, signal);
      } catch (error) {
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
        await reportTenantFailure(batch.tenantId, result.tenantFailure, log);
      }
      enrichment = result;
    }
    const header = {
      ...cycleBatchHeader(batch),
      vulnerabilityMode: batch.vulnerabilityMode,
      collectedAt: enrichment.collectedAt.toISOString(),
    };
    await deps.publisher.send(deps.topic, 'urs/enriched-batch', [
      deviceBatchMessage(batch.tenantId, header, enrichment.devices),
    ]);
    batches.inc({ mode: batch.vulnerabilityMode });
    const failed = enrichment.devices.filter((device) => device.vulnerabilities === null).length;
    log.info('batch enriched', { devices: enrichment.devices.length, failed, mode: batch.vulnerabilityMode });
  }
}
