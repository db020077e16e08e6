import {
  cycleBatchHeader,
  type DeviceBatch,
  type EnrichedDevice,
  type VulnerabilityCorrection,
  type VulnerabilitySummary,
} from '@urs/contracts';
import type { Logger } from '@urs/logging';
import type { BulkVulnerabilityCache, CycleStore, LatestExport } from '@urs/store';
import { unreadableInExport, type Corrections } from './enrichment';
import { sleepUntil, throwIfStopping } from './interruption';
import { NOT_IN_EXPORT_SNAPSHOT, listedBy } from './snapshot';
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

/**
 * Changed summaries as correction batches of CORRECTIONS_PER_BATCH devices: a device gone from the export
 * (null) has no vulnerabilities; one whose rows all were unreadable (the JSON `null`) has none known.
 */
export async function correctionParts(
  changed: AsyncIterable<[string, string | null][]> | Iterable<[string, string | null][]>,
  cvssThreshold: number,
): Promise<VulnerabilityCorrection[][]> {
  const empty = emptySummary(cvssThreshold);
  const parts: VulnerabilityCorrection[][] = [];
  let part: VulnerabilityCorrection[] = [];
  for await (const slice of changed) {
    for (const [deviceId, json] of slice) {
      const summary = json === null ? empty : (JSON.parse(json) as VulnerabilitySummary | null);
      part.push(
        summary === null
          ? { deviceId, vulnerabilities: null, fetchError: unreadableInExport() }
          : { deviceId, vulnerabilities: summary },
      );
      if (part.length === CORRECTIONS_PER_BATCH) {
        parts.push(part);
        part = [];
      }
    }
  }
  if (part.length > 0) parts.push(part);
  return parts;
}

/**
 * The devices of a batch sent as not in their export's snapshot (first seen after it), with their
 * `firstSeen`: the cycle's own export, read after its last batch, may list them.
 */
export function notInSnapshot(devices: EnrichedDevice[]): [string, string][] {
  return devices.flatMap(({ machine, fetchError }): [string, string][] =>
    fetchError?.code === NOT_IN_EXPORT_SNAPSHOT && typeof machine.firstSeen === 'string'
      ? [[machine.id, machine.firstSeen]]
      : [],
  );
}

/**
 * The corrections, with those of the devices the cycle's earlier batches sent as not in the latest
 * export's snapshot (`notInSnapshot`) that the cycle's own snapshot lists. Those the export holds are
 * among the changed devices already, the latest export holding none of them; the others have no
 * vulnerabilities now, and nothing else would say so: absent from both exports, no comparison finds them.
 */
export async function listedSince(
  corrections: Corrections,
  unlisted: [string, string][],
  cvssThreshold: number,
): Promise<VulnerabilityCorrection[][]> {
  const changed = new Set(corrections.parts.flatMap((part) => part.map((item) => item.deviceId)));
  const clear = unlisted
    .filter(([id, firstSeen]) => !changed.has(id) && listedBy(firstSeen, corrections.snapshot))
    .map(([id]): [string, null] => [id, null]);
  return [...corrections.parts, ...(await correctionParts([clear], cvssThreshold))];
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
  cycles: Pick<CycleStore, 'enrichedOrLostBatches'>;
  /** How long corrections wait for the cycle's earlier batches, in milliseconds. Default 30000. */
  correctionWaitMs?: number;
  /** Pause between two looks at another replica's bulk export, in milliseconds (at most 50 here). Default 200. */
  bulkPollMs?: number;
}

/**
 * Waits until every batch of the cycle before `batch` was enriched and produced, on any replica, or recorded
 * lost (dead-lettered: it never will be), so each correction follows its device's batch on the tenant's
 * partition; after `correctionWaitMs` the corrections go anyway (an earlier batch still on its way, or lost
 * without the record), and the log says so.
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
      const settled = await deps.cycles.enrichedOrLostBatches(
        batch.tenantId,
        batch.cycleId,
        batch.batchIndex,
      );
      if (settled >= batch.batchIndex) return;
      if (Date.now() >= deadline) {
        log.warn('corrections sent before every earlier batch was enriched', {
          enrichedOrLost: settled,
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
