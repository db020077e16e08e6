import { deviceBatchMessage, type MessageHandler, type Publisher } from '@urs/bus';
import { cycleBatchHeader, type EnrichedBatch, type ScoreBatch, type ScoredDevice } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { scoreDevice } from '@urs/scoring';
import type { ScoreStore } from '@urs/store';
import type { Registry } from '@urs/telemetry';
import type { ProfileCache } from './profiles';
import { deviceRecordOf, toScoredDevice } from './scored-device';

export interface ScoreHandlerDeps {
  profiles: ProfileCache;
  scores: Pick<ScoreStore, 'saveScores' | 'getDeviceScores'>;
  publisher: Publisher;
  /** `urs.device-scores`. */
  topic: string;
  logger: Logger;
  metrics: Registry;
  now?: () => Date;
}

/**
 * Scores an enriched batch with the tenant's profile (inactivity aged against the cycle's start),
 * stores each device's score (a redelivered or older batch never overwrites a newer score) and emits
 * the scored batch with the same cycle header. The batch is emitted even when its scores were already
 * stored, so a redelivery after a crash still reaches the publisher, which counts each batch once.
 *
 * A correction batch (a bulk cycle's devices whose vulnerabilities its own export changed) scores each
 * device again from the score it has in the cycle (`deviceRecordOf`), stores it over that one, and says
 * what the devices counted before (`replaces`), so the cycle's summary moves them between bands. A
 * device without a score of the cycle (not listed in it, or already in a newer one) is left out. If the
 * scorer stops between storing and emitting a correction, the redelivery finds the corrected scores and
 * the summary keeps those devices in their earlier bands; their records are still published.
 */
export function createScoreHandler(deps: ScoreHandlerDeps): MessageHandler<EnrichedBatch> {
  const now = deps.now ?? (() => new Date());
  const scored = deps.metrics.counter('urs_devices_scored_total', 'Devices scored, by band.');
  const stale = deps.metrics.counter(
    'urs_scores_not_stored_total',
    'Scores not stored because a newer one was there.',
  );
  return async (message) => {
    const batch = message.value;
    if (batch === null) return;
    const log = deps.logger.child({
      tenantId: batch.tenantId,
      cycleId: batch.cycleId,
      batchIndex: batch.batchIndex,
    });
    const profile = await deps.profiles.get(batch.tenantId);
    const cycleStartMs = Date.parse(batch.cycleStartedAt);
    const score = (device: EnrichedBatch['devices'][number]): ScoredDevice => {
      // The summary was counted at the threshold of the cycle's start; a profile changed since then
      // applies from the next cycle, so only the count is handed over (not the threshold to check).
      const vulnerabilities =
        device.vulnerabilities === null
          ? null
          : { criticalCveCount: device.vulnerabilities.criticalCveCount, fetchedAt: batch.collectedAt };
      return toScoredDevice(device, scoreDevice(device.machine, vulnerabilities, profile, cycleStartMs));
    };
    const devices = batch.devices.map(score);
    const correction = batch.corrections ? await corrected(batch, score) : undefined;
    if (correction) devices.push(...correction.devices);
    const scoredAt = now().toISOString();
    // Each device is serialised once, for the stored score and for the emitted batch alike, as bytes
    // (see jsonBatchBytes in @urs/bus).
    const deviceJson = devices.map((device) => Buffer.from(JSON.stringify(device)));
    const saved = await deps.scores.saveScores(
      batch.tenantId,
      {
        cycleId: batch.cycleId,
        cycleStartedAt: batch.cycleStartedAt,
        collectedAt: batch.collectedAt,
        scoredAt,
        ...(correction ? { correction: true } : {}),
      },
      devices,
      deviceJson,
    );
    const header = {
      ...cycleBatchHeader(batch),
      collectedAt: batch.collectedAt,
      scoredAt,
      ...(correction ? { replaces: correction.replaces } : {}),
    };
    await deps.publisher.send(deps.topic, 'urs/score-batch', [
      deviceBatchMessage(batch.tenantId, header, devices, deviceJson),
    ]);
    for (const device of devices) scored.inc({ band: device.band });
    if (saved.skipped.length > 0) stale.inc({}, saved.skipped.length);
    log.info(correction ? 'correction scored' : 'batch scored', {
      devices: devices.length,
      stored: saved.written,
      notStored: saved.skipped.length,
    });
  };

  /** A correction batch's devices scored again from their scores of the cycle, and what those counted. */
  async function corrected(
    batch: EnrichedBatch,
    score: (device: EnrichedBatch['devices'][number]) => ScoredDevice,
  ): Promise<{ devices: ScoredDevice[]; replaces: NonNullable<ScoreBatch['replaces']> }> {
    const corrections = batch.corrections ?? [];
    const stored = await deps.scores.getDeviceScores(
      batch.tenantId,
      corrections.map((correction) => correction.deviceId),
    );
    const before = new Map<string, ScoredDevice>();
    for (const item of stored)
      if (item.cycleId === batch.cycleId) before.set(item.device.deviceId, item.device);
    const replaces: NonNullable<ScoreBatch['replaces']> = { bands: {}, incomplete: 0 };
    const devices: ScoredDevice[] = [];
    for (const { deviceId, vulnerabilities } of corrections) {
      const earlier = before.get(deviceId);
      if (earlier === undefined) continue;
      devices.push(score({ machine: deviceRecordOf(earlier), vulnerabilities }));
      replaces.bands[earlier.band] = (replaces.bands[earlier.band] ?? 0) + 1;
      if (earlier.missing.length > 0) replaces.incomplete += 1;
    }
    return { devices, replaces };
  }
}
