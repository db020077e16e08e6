import { deviceBatchMessage, type MessageHandler, type Publisher } from '@urs/bus';
import { cycleBatchHeader, type EnrichedBatch } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { scoreDevice } from '@urs/scoring';
import type { ScoreStore } from '@urs/store';
import type { Registry } from '@urs/telemetry';
import type { ProfileCache } from './profiles';
import { toScoredDevice } from './scored-device';

export interface ScoreHandlerDeps {
  profiles: ProfileCache;
  scores: Pick<ScoreStore, 'saveScores'>;
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
    const devices = batch.devices.map((device) => {
      // The summary was counted at the threshold of the cycle's start; a profile changed since then
      // applies from the next cycle, so only the count is handed over (not the threshold to check).
      const vulnerabilities =
        device.vulnerabilities === null
          ? null
          : { criticalCveCount: device.vulnerabilities.criticalCveCount, fetchedAt: batch.collectedAt };
      return toScoredDevice(device, scoreDevice(device.machine, vulnerabilities, profile, cycleStartMs));
    });
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
      },
      devices,
      deviceJson,
    );
    const header = { ...cycleBatchHeader(batch), collectedAt: batch.collectedAt, scoredAt };
    await deps.publisher.send(deps.topic, 'urs/score-batch', [
      deviceBatchMessage(batch.tenantId, header, devices, deviceJson),
    ]);
    for (const device of devices) scored.inc({ band: device.band });
    if (saved.skipped.length > 0) stale.inc({}, saved.skipped.length);
    log.info('batch scored', {
      devices: devices.length,
      stored: saved.written,
      notStored: saved.skipped.length,
    });
  };
}
