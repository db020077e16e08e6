import type { Publisher } from '@urs/bus';
import { vmsRecordKey } from '@urs/contracts';
import type { PublishedStore, ScoreStore } from '@urs/store';
import type { Registry } from '@urs/telemetry';
import type { LeaseHeld } from './lease';

export interface TombstonesDeps {
  published: Pick<PublishedStore, 'forget'>;
  scores: Pick<ScoreStore, 'remove'>;
  publisher: Publisher;
  /** `vms.risk-scores`. */
  topic: string;
  metrics: Registry;
}

/**
 * Sends devices' tombstones to VMS, then forgets them; counted in `urs_vms_records_total{kind="tombstone"}`.
 * `tombstonedAt`: the start (epoch ms) of the completed cycle that tombstones them, kept so that a batch of
 * that cycle or an older one, late or delivered again, does not bring them back (see `PublishedStore.forget`),
 * and so that the score of a newer cycle, stored before this one completed, stays (see `ScoreStore.remove`);
 * none for a deleted tenant's devices.
 */
export type Tombstones = (
  tenantId: string,
  deviceIds: string[],
  tombstonedAt?: number,
  held?: LeaseHeld,
) => Promise<void>;

/**
 * Tombstones go out before the devices are forgotten: a failure in between is retried with the devices
 * still listed, and a tombstone sent twice is harmless on a compacted topic. Sent under the tenant's lease
 * (`held`), only while it holds; once sent, the devices are forgotten however the lease fares: VMS may no
 * longer hold them, and forgotten, a later batch publishes them again rather than find them unchanged.
 */
export function createTombstones(deps: TombstonesDeps): Tombstones {
  const records = deps.metrics.counter(
    'urs_vms_records_total',
    'Records produced to vms.risk-scores, by kind.',
  );
  return async (tenantId, deviceIds, tombstonedAt, held) => {
    if (deviceIds.length === 0) return;
    held?.throwIfLost();
    await deps.publisher.send(
      deps.topic,
      'urs/vms-risk-score',
      deviceIds.map((deviceId) => ({ key: vmsRecordKey(tenantId, deviceId), value: null })),
    );
    await deps.published.forget(tenantId, deviceIds, tombstonedAt);
    await deps.scores.remove(tenantId, deviceIds, tombstonedAt);
    records.inc({ kind: 'tombstone' }, deviceIds.length);
  };
}
