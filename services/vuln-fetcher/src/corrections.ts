import { MAX_SEND_BYTES, recordBytes } from '@urs/bus';
import {
  NOT_IN_EXPORT_SNAPSHOT,
  cycleBatchHeader,
  listedBy,
  type DeviceBatch,
  type EnrichedDevice,
  type VulnerabilityCorrection,
  type VulnerabilitySummary,
} from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { UrsError } from '@urs/resilience';
import type { BulkVulnerabilityCache, CycleStore, LatestExport } from '@urs/store';
import { unreadableInExport, type Corrections } from './enrichment';
import { sleepUntil, throwIfStopping } from './interruption';
import { emptySummary } from './summarise';

// The correction batches that follow a bulk cycle's last batch when its earlier batches were enriched from
// the tenant's latest export: made from the devices the cycle's own export changed, and sent after those
// earlier batches.

/** Devices per correction batch: a summary is ~150 bytes, so ~150 KB a message. */
const CORRECTIONS_PER_BATCH = 1000;

/**
 * The corrections a bulk cycle's last batch brings when the cycle's own export is already stored
 * (another replica read it, this batch comes again, or a try of it stored it before failing) and its
 * earlier batches were enriched from `latest`: every device whose summary the export changed, their
 * summaries read back from the stored export a batch at a time.
 */
export async function storedCorrections(
  bulkCache: Pick<BulkVulnerabilityCache, 'scan' | 'compare' | 'read'>,
  batch: DeviceBatch,
  latest: LatestExport,
): Promise<Pick<Corrections, 'changed' | 'summaries'>> {
  const stored = bulkCache.scan(batch.tenantId, batch.cycleId);
  return {
    changed: await changedDevices(bulkCache.compare(batch.tenantId, latest.cycleId, stored)),
    async summaries(deviceIds) {
      const summaries = await bulkCache.read(batch.tenantId, batch.cycleId, deviceIds);
      if (summaries !== null) return summaries;
      // Each device would be corrected to no vulnerabilities. Tried again, the batch reads the export anew.
      throw new UrsError(
        'BULK_EXPORT_GONE',
        "the cycle's bulk export is gone from Redis (evicted, flushed or expired) while its corrections " +
          'were sent: the last batch is tried again and reads it anew',
        { canRetry: true },
      );
    },
  };
}

/**
 * The ids of the devices a comparison found changed, in its order. Only the ids are kept: on a day
 * Microsoft rescores a CVE most devices of a fleet change, and their summaries all at once (300,000
 * devices: a few hundred MB of objects and JSON) would not fit beside the export's fold; they are made
 * again a batch at a time as the batches are sent (`sendCorrections`).
 */
export async function changedDevices(
  changed: AsyncIterable<[string, string | null][]> | Iterable<[string, string | null][]>,
): Promise<string[]> {
  const ids: string[] = [];
  for await (const slice of changed) for (const [deviceId] of slice) ids.push(deviceId);
  return ids;
}

/** How many correction batches carry the corrections of this many devices. */
export const correctionBatchCount = (devices: number): number => Math.ceil(devices / CORRECTIONS_PER_BATCH);

/**
 * A device's correction from its summary in the cycle's own export: one the export does not list
 * (undefined) has no vulnerabilities; one whose rows all were unreadable (null) has none known.
 */
function correctionOf(
  deviceId: string,
  summary: VulnerabilitySummary | null | undefined,
  cvssThreshold: number,
): VulnerabilityCorrection {
  if (summary === undefined) return { deviceId, vulnerabilities: emptySummary(cvssThreshold) };
  if (summary === null) return { deviceId, vulnerabilities: null, fetchError: unreadableInExport() };
  return { deviceId, vulnerabilities: summary };
}

/**
 * Sends the corrections of `deviceIds` in batches of CORRECTIONS_PER_BATCH, in order, several batches a send:
 * each batch made (its summaries looked up, its message built by `message`, which gets its position among
 * them, 0 on) once the one before was, and the batches made so far sent once the next would take them past
 * MAX_SEND_BYTES of keys and JSON values. The publisher produces such a send in one request, on the tenant's
 * partition in its order (a batch larger than that goes alone); a 300,000-device fleet's corrections take ~12
 * sends, not 300. What is held at once is one send's batches and the next one, however many devices changed.
 * At least `batches` batches go: those past the corrections empty (the cycle counts more, which an earlier
 * try of its last batch sent, see `CycleStore.addCorrections`).
 */
export async function sendCorrections<M extends { key: string; json: string | Buffer }>(
  deviceIds: readonly string[],
  summaries: Corrections['summaries'],
  cvssThreshold: number,
  message: (corrections: VulnerabilityCorrection[], index: number) => M,
  send: (messages: M[]) => Promise<void>,
  batches = 0,
): Promise<void> {
  let messages: M[] = [];
  let bytes = 0;
  const count = Math.max(correctionBatchCount(deviceIds.length), batches);
  for (let at = 0, index = 0; index < count; at += CORRECTIONS_PER_BATCH, index++) {
    const ids = deviceIds.slice(at, at + CORRECTIONS_PER_BATCH);
    const found = ids.length > 0 ? await summaries(ids) : new Map<string, undefined>();
    const next = message(
      ids.map((id) => correctionOf(id, found.get(id), cvssThreshold)),
      index,
    );
    const size = recordBytes({ key: next.key, value: next.json });
    if (messages.length > 0 && bytes + size > MAX_SEND_BYTES) {
      await send(messages);
      messages = [];
      bytes = 0;
    }
    messages.push(next);
    bytes += size;
  }
  if (messages.length > 0) await send(messages);
}

/**
 * The devices of a batch sent as not in their export's snapshot (first seen after it, or less than a day
 * before), with their `firstSeen`: the cycle's own export, read after its last batch, may list them.
 */
export function notInSnapshot(devices: EnrichedDevice[]): [string, string][] {
  return devices.flatMap(({ machine, fetchError }): [string, string][] =>
    fetchError?.code === NOT_IN_EXPORT_SNAPSHOT && typeof machine.firstSeen === 'string'
      ? [[machine.id, machine.firstSeen]]
      : [],
  );
}

/**
 * The devices to correct: the changed ones, then those the cycle's earlier batches sent as not in the
 * latest export's snapshot (`notInSnapshot`) that the cycle's own snapshot lists and no change names. Those
 * the export holds are among the changed devices already, the latest export holding none of them; the
 * others have no vulnerabilities now (their summary looked up is absent from the export), and nothing else
 * would say so: absent from both exports, no comparison finds them.
 */
export function listedSince(corrections: Corrections, unlisted: [string, string][]): string[] {
  const listed = new Set(
    unlisted.filter(([, firstSeen]) => listedBy(firstSeen, corrections.snapshot)).map(([id]) => id),
  );
  if (listed.size === 0) return corrections.changed;
  for (const id of corrections.changed) listed.delete(id);
  return [...corrections.changed, ...listed];
}

/**
 * The header of the enriched batch made of a device batch: its cycle header, its vulnerability mode and the
 * hash of the profile its cycle started with (when the poller sent one), and when it was collected.
 */
export function enrichedHeader(batch: DeviceBatch, collectedAt: string) {
  return {
    ...cycleBatchHeader(batch),
    vulnerabilityMode: batch.vulnerabilityMode,
    collectedAt,
    ...(batch.profileHash !== undefined ? { profileHash: batch.profileHash } : {}),
  };
}

/** A correction batch's header: after the poller's batches, without totals (the last batch has them). */
export function correctionHeader(
  batch: DeviceBatch,
  batchIndex: number,
  collectedAt: string,
  corrections: VulnerabilityCorrection[],
) {
  const position = { batchIndex, lastBatch: false, totalBatches: undefined, totalDevices: undefined };
  return { ...enrichedHeader({ ...batch, ...position }, collectedAt), corrections };
}

export interface CorrectionWaitDeps {
  cycles: Pick<CycleStore, 'enrichedOrLostBatches'>;
  /** How long corrections wait for the cycle's earlier batches, in milliseconds. Default 30000; 0 does not wait. */
  correctionWaitMs?: number;
  /** Pause between two looks at another replica's bulk export, in milliseconds (at most 50 here). Default 200. */
  bulkPollMs?: number;
}

/**
 * Tries of a last batch whose wait for the cycle's earlier batches timed out before its corrections go
 * anyway: well under the bus's 20 attempts (DEFAULT_RUNNER_RETRY), after which it would be dead-lettered
 * and its cycle closed partial, the export it read never made the latest.
 */
export const CORRECTION_TRIES = 5;

/** Last batches whose wait timed out, remembered at most (one per bulk tenant whose earlier batch is late). */
const TIMED_OUT_BATCHES = 1000;

/**
 * Waits until every batch of the cycle before `batch` was enriched and produced, on any replica, or recorded
 * lost (dead-lettered: it never will be), so each correction follows its device's batch on the tenant's
 * partition: the scorer drops a correction of a device it has not scored for the cycle (the batch that
 * comes after it would keep the latest export's vulnerabilities until the next cycle). True once they are;
 * false when `correctionWaitMs` passed first: the last batch is to fail and be tried again (its cycle's
 * export stored first, so that a batch still to come is enriched from it). From its CORRECTION_TRIES-th
 * such try on (an earlier batch lost without the record, or held for long), or with a wait of 0, true
 * after the wait anyway: the corrections go, and the log says so.
 */
export function createCorrectionWait(deps: CorrectionWaitDeps) {
  const waitMs = deps.correctionWaitMs ?? 30_000;
  /** The tries timed out so far, by `tenantId/cycleId/batchIndex`: the bus tries a batch again in place. */
  const timedOut = new Map<string, number>();
  return async function earlierEnriched(
    batch: DeviceBatch,
    heartbeat: () => Promise<void>,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<boolean> {
    const key = `${batch.tenantId}/${batch.cycleId}/${batch.batchIndex}`;
    const deadline = Date.now() + waitMs;
    for (;;) {
      const settled = await deps.cycles.enrichedOrLostBatches(
        batch.tenantId,
        batch.cycleId,
        batch.batchIndex,
      );
      if (settled >= batch.batchIndex) {
        timedOut.delete(key);
        return true;
      }
      if (Date.now() >= deadline) {
        const tries = (timedOut.get(key) ?? 0) + 1;
        timedOut.delete(key);
        const fields = { enrichedOrLost: settled, earlierBatches: batch.batchIndex, tries };
        if (waitMs === 0 || tries >= CORRECTION_TRIES) {
          log.warn('corrections sent before every earlier batch was enriched', fields);
          return true;
        }
        timedOut.set(key, tries);
        if (timedOut.size > TIMED_OUT_BATCHES) {
          const oldest = timedOut.keys().next().value;
          if (oldest !== undefined) timedOut.delete(oldest);
        }
        log.info(
          'corrections wait for earlier batches not enriched yet: the last batch is tried again',
          fields,
        );
        return false;
      }
      await heartbeat();
      await sleepUntil(Math.min(deps.bulkPollMs ?? 200, 50), signal);
      throwIfStopping(signal);
    }
  };
}
