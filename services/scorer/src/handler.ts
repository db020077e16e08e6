import { deviceBatchMessage, type MessageHandler, type Publisher } from '@urs/bus';
import { cycleBatchHeader, type EnrichedBatch, type ScoreBatch, type ScoredDevice } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { scoreDevice, type CompiledProfile } from '@urs/scoring';
import { tenantsNotRebuilt, type ReplacedScore, type ScoreStore, type StoredScore } from '@urs/store';
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
 * stored, so a redelivery after a crash still reaches the publisher, which counts each batch once; it then
 * carries the scores stored the first time (see `putStored`), which the store answers with the save.
 *
 * A correction batch (a bulk cycle's devices whose vulnerabilities its own export changed) scores each
 * device again from the score it has in the cycle (`deviceRecordOf`), stores it over that one, and says
 * what the devices counted before (`replaces`), so the cycle's summary moves them between bands. A
 * device without a score of the cycle (not listed in it, or already in a newer one) is left out. Each
 * corrected score is stored with what it replaced, so the same correction handled again (the scorer
 * stopped before emitting it) says the same.
 *
 * A batch of a deleted tenant (see `dropDeleted`) is dropped. A batch whose tenant Redis does not know
 * because it lost its data (the registrar has not rebuilt the tenant records yet) is not taken for one: it
 * fails with TENANTS_NOT_REBUILT, which the bus holds and tries again until the records are back.
 */
export function createScoreHandler(deps: ScoreHandlerDeps): MessageHandler<EnrichedBatch> {
  const now = deps.now ?? (() => new Date());
  const scored = deps.metrics.counter('urs_devices_scored_total', 'Devices scored, by band.');
  const stale = deps.metrics.counter(
    'urs_scores_not_stored_total',
    'Scores not stored because one of the same cycle or a newer one was there (a repeated or late batch: sent on as stored), or the device was tombstoned since.',
  );
  const ofDeleted = deps.metrics.counter(
    'urs_batches_of_deleted_tenants_total',
    'Batches of a deleted tenant dropped: neither stored nor sent on.',
  );
  const notHeld = deps.metrics.counter(
    'urs_scorer_cycle_profile_not_held_total',
    'Batches scored without the profile their cycle started with, by outcome.',
  );
  /**
   * A batch scored with another profile than its cycle's (`profileHash`: the cycle started before more
   * changes than the scorer holds, or its profile was compacted away on urs.tenants before this scorer read
   * it), or whose counts were made at another CVSS threshold than its profile's: counted and logged, as VMS
   * gets another `profileHash` for it than for the cycle's other batches (`other_profile`), or criticalCves
   * missing (`cves_not_scored`).
   */
  const notTheCyclesProfile = (
    log: Logger,
    batch: EnrichedBatch,
    profile: CompiledProfile,
    countedAt: number | undefined,
    cvesNotScored: number,
  ): void => {
    const otherProfile = batch.profileHash !== undefined && batch.profileHash !== profile.hash;
    if (!otherProfile && cvesNotScored === 0) return;
    notHeld.inc({ outcome: cvesNotScored > 0 ? 'cves_not_scored' : 'other_profile' });
    log.warn(
      cvesNotScored > 0
        ? "batch counted at another CVSS threshold than its profile's: criticalCves not scored"
        : 'batch scored without the profile its cycle started with',
      {
        ...(batch.profileHash !== undefined ? { cycleProfileHash: batch.profileHash } : {}),
        profileHash: profile.hash,
        profileCvssThreshold: profile.cvssThreshold,
        ...(countedAt !== undefined ? { countedAt } : {}),
        ...(cvesNotScored > 0 ? { cvesNotScored } : {}),
      },
    );
  };
  /**
   * A batch of a tenant deleted while it was on its way: its scores are not stored (the publisher removed
   * the tenant's on deletion, and would not publish them either), nor is it sent on. Expected after every
   * deletion, so logged and counted, not dead-lettered.
   */
  const dropDeleted = (log: Logger, devices: number): void => {
    ofDeleted.inc();
    log.info('batch of a deleted tenant dropped', { devices });
  };
  return async (message) => {
    const batch = message.value;
    if (batch === null) return;
    const log = deps.logger.child({
      tenantId: batch.tenantId,
      cycleId: batch.cycleId,
      batchIndex: batch.batchIndex,
    });
    // The cycle is scored with the profile it started with (`profileHash`), an earlier one when the tenant
    // changed its profile since. A batch without it is scored with the profile its summaries were counted
    // for: at the threshold of the cycle's start. A bulk cycle's correction batch has no devices of its
    // own, only its corrections' summaries.
    const countedAt =
      batch.devices.find((device) => device.vulnerabilities)?.vulnerabilities?.cvssThreshold ??
      batch.corrections?.find((correction) => correction.vulnerabilities)?.vulnerabilities?.cvssThreshold;
    const profile = await deps.profiles.get(batch.tenantId, {
      ...(batch.profileHash !== undefined ? { profileHash: batch.profileHash } : {}),
      ...(countedAt !== undefined ? { cvssThreshold: countedAt } : {}),
    });
    if (profile === null) return dropDeleted(log, batch.devices.length);
    const cycleStartMs = Date.parse(batch.cycleStartedAt);
    /** Devices whose count was made at another CVSS threshold than the profile's: criticalCves not scored. */
    let cvesNotScored = 0;
    const score = (device: EnrichedBatch['devices'][number]): ScoredDevice => {
      const counted = device.vulnerabilities;
      // A count made at another threshold than the profile's (the cycle's own profile no longer held, the
      // tenant having changed its threshold since the cycle started) is not scored with it: a count at 9
      // charged by a profile of 7 would be neither profile's score. criticalCves is missing then, and says why.
      const otherThreshold = counted !== null && counted.cvssThreshold !== profile.cvssThreshold;
      // The threshold is handed over with the count, so scoring checks the two agree.
      const vulnerabilities =
        counted === null || otherThreshold
          ? null
          : {
              criticalCveCount: counted.criticalCveCount,
              cvssThreshold: counted.cvssThreshold,
              fetchedAt: batch.collectedAt,
            };
      const result = toScoredDevice(
        device,
        scoreDevice(device.machine, vulnerabilities, profile, cycleStartMs),
      );
      if (otherThreshold) {
        cvesNotScored += 1;
        result.missingReasons = { ...result.missingReasons, criticalCves: 'CVSS_THRESHOLD_CHANGED' };
      }
      return result;
    };
    const devices = batch.devices.map(score);
    const correction = batch.corrections ? await corrected(batch, score) : undefined;
    if (correction) devices.push(...correction.devices);
    notTheCyclesProfile(log, batch, profile, countedAt, cvesNotScored);
    // What each corrected score replaced, in the order of `devices` (the batch's own devices first).
    const replaced = correction && [...batch.devices.map(() => undefined), ...correction.replaced];
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
      replaced,
    );
    // Checked in the save's own Redis step: the tenant may be deleted while its profile is still in memory.
    if (saved.tenantDeleted) return dropDeleted(log, batch.devices.length);
    // Its record missing because Redis lost its data, not because it was deleted: held until the rebuild.
    if (saved.tenantsNotRebuilt) throw tenantsNotRebuilt(batch.tenantId);
    // The batch came again, its scores stored the first time: those go on, not the ones scored now.
    const sentAsStored = putStored(devices, deviceJson, saved.alreadyStored);
    const header = {
      ...cycleBatchHeader(batch),
      collectedAt: batch.collectedAt,
      scoredAt,
      ...(correction ? { replaces: correction.replaces } : {}),
    };
    await deps.publisher.send(deps.topic, 'urs/score-batch', [
      deviceBatchMessage(batch.tenantId, header, devices, deviceJson),
    ]);
    // Counted by band first, then one increment per band: an increment builds its series' key from the
    // labels (sorted, escaped, joined), ~0.5 µs, which was paid once per device.
    const byBand = new Map<string, number>();
    for (const device of devices) byBand.set(device.band, (byBand.get(device.band) ?? 0) + 1);
    for (const [band, count] of byBand) scored.inc({ band }, count);
    if (saved.skipped.length > 0) stale.inc({}, saved.skipped.length);
    log.info(correction ? 'correction scored' : 'batch scored', {
      devices: devices.length,
      stored: saved.written,
      notStored: saved.skipped.length,
      ...(sentAsStored > 0 ? { sentAsStored } : {}),
    });
  };

  /**
   * Puts in place of each device scored now the score the store kept of it for the cycle (`alreadyStored`),
   * device and JSON alike; answers how many. The store holds what the cycle scored: a batch delivered again
   * (its scorer stopped after sending it, before committing it) may be scored again by a scorer that holds a
   * newer profile of the tenant (one started since), and its scores, sent on, would reach VMS while the
   * cycle's summary, the devices API and a snapshot keep the first ones.
   */
  function putStored(
    devices: ScoredDevice[],
    deviceJson: Buffer[],
    alreadyStored: readonly StoredScore[] | undefined,
  ): number {
    if (!alreadyStored?.length) return 0;
    const byId = new Map(alreadyStored.map((item) => [item.device.deviceId, item.device]));
    let replaced = 0;
    devices.forEach((device, index) => {
      const stored = byId.get(device.deviceId);
      if (stored === undefined) return;
      devices[index] = stored;
      deviceJson[index] = Buffer.from(JSON.stringify(stored));
      replaced += 1;
    });
    return replaced;
  }

  /** A correction batch's devices scored again from their scores of the cycle, and what those counted. */
  async function corrected(
    batch: EnrichedBatch,
    score: (device: EnrichedBatch['devices'][number]) => ScoredDevice,
  ): Promise<{
    devices: ScoredDevice[];
    replaced: ReplacedScore[];
    replaces: NonNullable<ScoreBatch['replaces']>;
  }> {
    const corrections = batch.corrections ?? [];
    const stored = await deps.scores.getDeviceScores(
      batch.tenantId,
      corrections.map((correction) => correction.deviceId),
    );
    const ofCycle = new Map(
      stored.filter((item) => item.cycleId === batch.cycleId).map((item) => [item.device.deviceId, item]),
    );
    const replaces: NonNullable<ScoreBatch['replaces']> = { bands: {}, incomplete: 0 };
    const devices: ScoredDevice[] = [];
    const replaced: ReplacedScore[] = [];
    const seen = new Set<string>();
    for (const { deviceId, vulnerabilities, fetchError } of corrections) {
      const earlier = ofCycle.get(deviceId);
      if (earlier === undefined || seen.has(deviceId)) continue;
      seen.add(deviceId);
      // Stored by this same correction before (it comes again): what that score replaced.
      const was =
        earlier.replaced !== undefined && earlier.collectedAt === batch.collectedAt
          ? earlier.replaced
          : { band: earlier.device.band, incomplete: earlier.device.missing.length > 0 };
      // With the correction's own fetch error: why its vulnerabilities are missing now, if they are.
      devices.push(score({ machine: deviceRecordOf(earlier.device), vulnerabilities, fetchError }));
      replaced.push(was);
      replaces.bands[was.band] = (replaces.bands[was.band] ?? 0) + 1;
      if (was.incomplete) replaces.incomplete += 1;
    }
    return { devices, replaced, replaces };
  }
}
