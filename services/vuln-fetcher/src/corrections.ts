import { cycleBatchHeader, type DeviceBatch, type VulnerabilityCorrection } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import type { BulkVulnerabilityCache, CycleStore, LatestExport } from '@urs/store';
import { sleepUntil, throwIfStopping } from './interruption';
import { emptySummary } from './summarise';

// The correction batches that follow a bulk cycle's last batch when its earlier batches were enriched from
// the tenant's latest export: made from the devices the cycle's own export changed, and sent after those
// earlier batches.

/** Devices per correction batch: a summary is ~150 bytes, so ~150 KB a message. */
const CORRECTIONS_PER_BATCH = 1000;

/**
 * The corrections a bulk cycle's last batch brings when the cycle's own export is already stored
 * (another replica read it, or this batch comes again) and its earlier batches were enriched from
 * `latest`: every device whose summary the export changed.
 */
export async function storedCorrections(
  bulkCache: Pick<BulkVulnerabilityCache, 'scan' | 'compare'>,
  batch: DeviceBatch,
  latest: LatestExport,
): Promise<VulnerabilityCorrection[][]> {
  const stored = bulkCache.scan(batch.tenantId, batch.cycleId);
  return correctionParts(bulkCache.compare(batch.tenantId, latest.cycleId, stored), batch.cvssThreshold);
}

/** Changed summaries as correction batches of CORRECTIONS_PER_BATCH devices. */
export async function correctionParts(
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
export function correctionHeader(
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

export interface CorrectionWaitDeps {
  cycles: Pick<CycleStore, 'enrichedBatches'>;
  /** How long corrections wait for the cycle's earlier batches, in milliseconds. Default 30000. */
  correctionWaitMs?: number;
  /** Pause between two looks at another replica's bulk export, in milliseconds (at most 50 here). Default 200. */
  bulkPollMs?: number;
}

/**
 * Waits until every batch of the cycle before `batch` was enriched and produced, on any replica, so each
 * correction follows its device's batch on the tenant's partition; after `correctionWaitMs` the
 * corrections go anyway (an earlier batch dead-lettered, say), and the log says so.
 */
export function createCorrectionWait(deps: CorrectionWaitDeps) {
  return async function earlierEnriched(
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
  };
}
