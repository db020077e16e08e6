import { batchItemJson, jsonWithHead, type MessageHandler, type Publisher } from '@urs/bus';
import { vmsRecord, vmsRecordHead, type ScoreBatch } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { leaseTime } from '@urs/resilience';
import type { CycleStore, DeviceScoreRef, PublishedStore, PublishOptions, TenantLease } from '@urs/store';
import type { Registry } from '@urs/telemetry';
import type { CycleCompletion } from './completion';
import type { InOrder } from './in-order';
import { onceLeased, whileHeld, type TenantLeasing } from './lease';
import { batchStats, recordDigest } from './records';

export interface PublishHandlerDeps {
  cycles: Pick<CycleStore, 'recordBatch'>;
  published: Pick<PublishedStore, 'changed' | 'renewTenantLease'>;
  completion: CycleCompletion;
  /** The tenants' queue, shared with the completion's sweep (see `CycleCompletionDeps.inOrder`). */
  inOrder: InOrder;
  /** This replica's tenant leases, shared with the completion's sweep (see `CycleCompletionDeps.leasing`). */
  leasing: TenantLeasing;
  publisher: Publisher;
  /** `vms.risk-scores`. */
  topic: string;
  logger: Logger;
  metrics: Registry;
}

/**
 * Publishes a scored batch's changed devices at once, records the batch for the cycle's summary, and
 * completes the cycle when it was the last one missing.
 *
 * Why device records go out per batch instead of at the cycle's end: they are the newest scores either
 * way, and holding them back would add the rest of the cycle's collection (minutes for a large fleet) to
 * every device's latency; completion then only has to produce the one summary record, which keeps
 * publication within ~2 s of the cycle's last score. VMS reads `vms.risk-summary` to know a cycle is whole.
 *
 * Order of effects, for at-least-once delivery: produce the records, then, in one Redis step, remember them
 * as published and record the batch. A crash in between redelivers the batch: its records may be produced
 * twice (same key, same value: harmless on a compacted topic) but the batch is counted once, with the records
 * it produced (remembered apart, a crash between the two made the redelivery find nothing changed and count
 * none).
 *
 * From reading what changed to recording the batch, the replica holds the tenant's lease, taken and given back by
 * those two calls (no round trip of its own): another replica's sweep never sends a summary of the tenant in
 * between (see `CycleCompletionDeps.leasing`). A lease that lapsed meanwhile (Redis not answering its renewals for
 * its length) stops the batch before its send, and one found another's when the batch is recorded records nothing:
 * either way the batch fails, retryably (`TENANT_LEASE_LOST`), and is handled again. A batch that fails leaves the
 * lease to its retry, which takes it again, or to lapse. A batch that completes its cycle takes the lease again to
 * send the summary (`CycleCompletion.tryComplete`), only then: the other batches pay no round trip for it.
 */
export function createPublishHandler(deps: PublishHandlerDeps): MessageHandler<ScoreBatch> {
  const records = deps.metrics.counter(
    'urs_vms_records_total',
    'Records produced to vms.risk-scores, by kind.',
  );
  // Two batches of a tenant may be handed over at once (the runner orders by key, two at a time, so the
  // next batch is decoded and validated while this one waits on Redis and Kafka); their effects still
  // run one batch at a time, in offset order, so a device's record is never produced by two batches at
  // once and what `changed` reads is what the batch before committed.
  return (message) => {
    const batch = message.value;
    if (batch === null) return Promise.resolve();
    return deps.inOrder(batch.tenantId, () => publishBatch(batch, message.signal));
  };

  /**
   * Which devices changed, read once the tenant's lease is this replica's: another replica's sweep holds
   * it while it sends one of the tenant's summaries, for a summary's length (a snapshot's at most), and
   * the replica that handles the tenant's deletion while it sends its tombstones. 'deleted', the lease
   * not held, when the batch's cycle is of a deleted tenant (`PublishedStore.ofDeletedTenant`: also a record
   * the registrar removed, the deletion's marker lost with a wiped Redis); TENANTS_NOT_REBUILT, the batch held,
   * while the record is missing and the registrar has not rebuilt the records.
   */
  async function changedUnderLease(
    lease: TenantLease,
    cycleAt: number,
    refs: DeviceScoreRef[],
    options: PublishOptions,
    signal: AbortSignal | undefined,
  ): Promise<{ toPublish: DeviceScoreRef[] | 'deleted'; takenAt: number }> {
    // When the take that held was asked, by the lease clock: the lease lasts from then (see `whileHeld`).
    let takenAt = leaseTime();
    // A runner that gives the batch up (a rebalance, a stop) leaves it to whoever owns it next.
    const toPublish = await onceLeased(() => {
      takenAt = leaseTime();
      return deps.published.changed(lease, cycleAt, refs, options);
    }, signal);
    return { toPublish, takenAt };
  }

  /**
   * The records of the batch's changed devices. Each is the device with the record's head in front, so
   * its JSON is made of the head's and the device's bytes as the batch brought them, when it brought
   * them: serialising ~1.7 KB per device again was the publisher's largest single cost.
   *
   * Only the first record is validated by the send. A record's rules are its head's and, for the rest, the
   * scored device's as an item of `urs/score-batch` (the contracts' tests hold the two schemas to that), and
   * every device met those when the bus validated the consumed batch; the head is the same in every record
   * of the batch, so checking it in the first record checks it for all of them. Validating each record
   * again cost ~2 µs of CPU per record, a fifth of this handler's own work.
   */
  function vmsRecords(batch: ScoreBatch, changed: ReadonlySet<string>) {
    const lines = batchItemJson(batch, batch.devices);
    const headJson = JSON.stringify(vmsRecordHead(batch.tenantId, batch.cycleId, batch.scoredAt));
    const messages: (ReturnType<typeof vmsRecord> & { json?: Buffer; checked?: true })[] = [];
    batch.devices.forEach((device, index) => {
      if (!changed.has(device.deviceId)) return;
      const record = vmsRecord(batch.tenantId, batch.cycleId, batch.scoredAt, device);
      const line = lines?.[index];
      const json = line && jsonWithHead(headJson, line);
      const first = messages.length === 0;
      if (json) messages.push(first ? { ...record, json } : { ...record, json, checked: true });
      else messages.push(first ? record : { ...record, checked: true });
    });
    return messages;
  }

  async function publishBatch(batch: ScoreBatch, signal: AbortSignal | undefined): Promise<void> {
    const log = deps.logger.child({
      tenantId: batch.tenantId,
      cycleId: batch.cycleId,
      batchIndex: batch.batchIndex,
    });
    const cycleAt = Date.parse(batch.cycleStartedAt);
    const refs = batch.devices.map((device) => ({
      deviceId: device.deviceId,
      score: device.score,
      band: device.band,
      digest: recordDigest(device),
    }));
    // A correction's scores are newer than its cycle's first ones (see PublishOptions).
    const options = { correction: batch.replaces !== undefined };
    const lease = { tenantId: batch.tenantId, ...deps.leasing };
    const { toPublish, takenAt } = await changedUnderLease(lease, cycleAt, refs, options, signal);
    if (toPublish === 'deleted') {
      // Its tenant was deleted since the cycle started: the tenant's devices were tombstoned (or are being
      // tombstoned, by the replica that holds the lease, or will be once it reads the deletion) and must not
      // come back to VMS. Neither recorded
      // nor completed: the cycle owes VMS no summary (the sweep drops it, see `sendOwed`).
      log.info('batch of a deleted tenant not published', { devices: batch.devices.length });
      return;
    }
    const changed = new Set(toPublish.map((ref) => ref.deviceId));
    const messages = vmsRecords(batch, changed);
    const { first, state } = await whileHeld(deps.published, lease, takenAt, log, async (held) => {
      // A lease lapsed since what changed was read (Redis not answering its renewals): another replica may
      // have tombstoned or summed up the tenant since; handled again, the batch reads it anew.
      held.throwIfLost();
      await deps.publisher.send(deps.topic, 'urs/vms-risk-score', messages);
      records.inc({ kind: 'changed' }, messages.length);
      // The devices committed in the batch's own step (see the order of effects above), only while the lease
      // is still this replica's, as Redis tells: otherwise nothing is recorded, and the batch, handled
      // again, sends its records again after what the other replica sent.
      return deps.cycles.recordBatch(
        batch.tenantId,
        batch.cycleId,
        batch.batchIndex,
        batchStats(batch, messages.length),
        lease,
        { cycleAt, devices: refs, options },
      );
    });
    log.info('batch published', {
      devices: batch.devices.length,
      changed: messages.length,
      redelivered: !first,
    });
    await deps.completion.tryComplete(
      batch.tenantId,
      batch.cycleId,
      {
        cycleStartedAt: batch.cycleStartedAt,
        ...(batch.totalBatches !== undefined ? { totalBatches: batch.totalBatches } : {}),
        ...(batch.totalDevices !== undefined ? { totalDevices: batch.totalDevices } : {}),
      },
      state,
      signal,
    );
  }
}
