import type Redis from 'ioredis';
import { OWNED_LUA, releaseOwnedKey, releaseOwnedKeyIn, renewOwnedKey, takeOwnedKeyIn } from './owned-key';
import { pollLeaseKey, type PollLease } from './poll-lease';
import {
  owedSummary,
  summariesOwedKey,
  tenantLeaseKey,
  TenantLeaseLostError,
  type TenantLease,
} from './published';
import { commitIn, type DeviceScoreRef, type PublishOptions } from './published-devices';
import { replies } from './replies';
import { tenantStatusKey } from './tenants';
import {
  ABANDON,
  ADD_CORRECTIONS,
  BEGIN,
  CLAIM,
  ENRICHED_OR_LOST,
  HOLD_OPEN,
  LISTED,
  LISTING_PENDING,
  LOST,
  MERGED_DEVICES,
  WITHDRAW,
} from './cycle-scripts';
import { mergedDevicesKey } from './merged-devices';

// KEYS[1] batches hash (batch index → stats), KEYS[2] cycle hash, KEYS[3] lost batches hash, KEYS[4] the
// tenant's lease when the batch holds it; ARGV: batch index, stats (JSON), the batches' ttl ms, the lease's
// holder. Records the batch once (a redelivery not counted twice; a batch recorded lost is no longer lost) and
// answers {recorded now (1) or before (0), batches recorded, the cycle's fields, the lost batches' devices}:
// 0, nothing written, once the lease is not the holder's any more (see `recordBatch`).
const RECORD_BATCH = `${OWNED_LUA}
if KEYS[4] and not owned(KEYS[4], ARGV[4]) then return 0 end
local added = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
local count = redis.call('HLEN', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local fields = redis.call('HGETALL', KEYS[2])
redis.call('HDEL', KEYS[3], ARGV[1])
return {added, count, fields, redis.call('HVALS', KEYS[3])}`;

/** What the poller knew of a cycle whose listing stopped before its end (`CycleStore.abandon`). */
export interface CycleAbandonment {
  /**
   * Batches it had emitted. Absent when not known: the poller listing the cycle died, and the one that took
   * its tenant over (`POLLER_GONE`) cannot tell how far it got.
   */
  batches?: number;
  /** Devices it had listed, emitted or held back; absent when not known. */
  devices?: number;
  /**
   * Why the listing stopped: the error's code (`CYCLE_ABORTED` when the lease was lost or the poller stopped,
   * `POLLER_GONE` when its poller died and another took the tenant over).
   */
  code: string;
  at: string;
}

/** What `CycleStore.claimBatch` found. */
export type BatchClaimAnswer = 'claimed' | 'held' | 'enriched';

/** One polling cycle of one tenant, as the poller began it and the publisher completes it. */
export interface CycleState {
  tenantId: string;
  cycleId: string;
  startedAt: string;
  /**
   * Past this time the publisher closes the cycle as partial, unless the vuln-fetcher still reads the cycle's
   * bulk export and holds it open (`holdOpen`).
   */
  deadlineAt: string;
  /**
   * Known once the poller has listed every device: its batches, plus the correction batches the
   * vuln-fetcher adds to a bulk cycle enriched from the tenant's latest export (`addCorrections`).
   */
  totalBatches?: number;
  /**
   * The correction batches the vuln-fetcher added (`addCorrections`), known before the cycle's last batch
   * goes on, also when the poller's listing (`totalBatches`) is missing.
   */
  correctionBatches?: number;
  totalDevices?: number;
  listedAt?: string;
  /**
   * Known once listed too: the vulnerability mode the cycle ran in, and why bulk (for the tenant's
   * status), so a poller that ends a cycle another one listed shows what that one would have.
   */
  vulnerabilityMode?: 'per-device' | 'bulk';
  note?: string;
  /**
   * The tenant's device count when the cycle began (its last listed cycle's, from the tenant's status): the
   * best known total of a cycle closed before its listing ended. Absent for a tenant never listed.
   */
  lastKnownDevices?: number;
  /** Set when the poller recorded that the cycle's listing stopped before its end. */
  abandoned?: CycleAbandonment;
  /**
   * The totals the poller recorded right before it sent the cycle's last batch (`listingPending`), until it
   * records the listing (`listed`): a poller that stops in between has sent that batch, or was sending it.
   */
  pendingListing?: Parameters<CycleStore['listed']>[2];
  /** Distinct batches recorded as scored so far. */
  scoredBatches: number;
  /**
   * Distinct batches recorded as lost (`lost`: dead-lettered on the way) and not scored since; absent when
   * none. A batch scored after all is no longer lost: `scoredBatches` counts it instead.
   */
  lostBatches?: number;
  /** The devices of those lost batches, as far as their dead letters told them; absent when no batch is lost. */
  lostDevices?: number;
  /** Set once the cycle's summary was published. */
  published?: 'complete' | 'partial';
}

export interface CycleStore {
  /** The poller starts a cycle. Keys expire `retentionMs` after the deadline. */
  begin(cycle: { tenantId: string; cycleId: string; startedAt: string; deadlineAt: string }): Promise<void>;
  /**
   * The poller has produced every batch of the cycle (a null or absent `note` stores none). A cycle recorded
   * as abandoned meanwhile (its poller's renewals failed and another took the tenant over, `POLLER_GONE`) is
   * not abandoned after all: its abandonment is dropped and its close goes back to what it was, so that the
   * publisher completes it as its batches are scored instead of closing it partial while they still come.
   * A cycle whose batches were all recorded before it was listed is given its close at `listedAt`: the
   * publisher's sweep completes it then (the batches, without the totals, could not).
   */
  listed(
    tenantId: string,
    cycleId: string,
    totals: {
      totalBatches: number;
      totalDevices: number;
      listedAt: string;
      vulnerabilityMode?: 'per-device' | 'bulk';
      note?: string | null;
    },
  ): Promise<void>;
  /**
   * The poller's totals of a begun cycle, recorded right before it sends the cycle's last batch (the one
   * carrying them), and dropped by `listed`. A poller that stops after that send and before `listed` (killed,
   * its lease lost) leaves them to the next holder of the tenant's lease, which records the listing from
   * them instead of taking the cycle for one left mid-listing. Fenced by the poller's lease on the tenant
   * (`PollLease`), in the same step: false, nothing written, once the lease is not `lease` any more. A write
   * the client queued while Redis was away and that lands after the lease ended would otherwise leave the next
   * holder totals of a batch never sent, and the cycle listed from them instead of redone. Nothing is written
   * for a cycle never begun or listed already (true all the same).
   */
  listingPending(
    lease: PollLease,
    cycleId: string,
    totals: Parameters<CycleStore['listed']>[2],
  ): Promise<boolean>;
  /**
   * The devices the cycle's listing saw merged into another one, recorded by the poller before it sends the
   * cycle's last batch, so that the publisher's completion of the cycle, complete, tombstones those VMS holds
   * at once (`PublishedStore.completeCycle`). Added to, never removed (a device recorded twice is one), and kept
   * as long as the cycle's hash; nothing written for a cycle Redis does not hold (never begun, or lost with a
   * wipe).
   */
  mergedDevices(tenantId: string, cycleId: string, deviceIds: string[]): Promise<void>;
  /**
   * Drops the totals `listingPending` kept: the send they were kept for did not carry the cycle's last batch
   * after all (Kafka refused it as too large, and it goes in halves, the last half with totals of its own).
   */
  dropPendingListing(tenantId: string, cycleId: string): Promise<void>;
  /**
   * The vuln-fetcher adds `batches` correction batches after the poller's last one (idempotent: the
   * same call again changes nothing). Called before the last batch goes on, so the publisher never
   * sees the poller's batches complete without them. Never lowers the count: a try of the last batch
   * stopped after sending its corrections, before the export it read was stored, may have sent more than
   * the next try (reading a newer export) makes, and the publisher counts each index scored. Answers the
   * cycle's count, which the try sends as many batches of (`batches` for a cycle never begun).
   */
  addCorrections(tenantId: string, cycleId: string, batches: number): Promise<number>;
  /**
   * The poller's listing of a begun cycle stopped before its last batch (Defender failed, the lease was lost,
   * the poller stops), and a new cycle will list the tenant again. Records what it had emitted and brings the
   * cycle's close forward so that its partial summary reaches VMS before the new cycle's: due at once when
   * every emitted batch is recorded already, else at `closeAt` (epoch ms; the handler closes it sooner, when
   * the last emitted batch is recorded; with the batches not known, only at `closeAt`). False, nothing
   * written, for a cycle listed in full, published or never begun, and for one abandoned already, unless
   * that abandonment's batches were not known and these are. A `listed` that comes after undoes it.
   */
  abandon(
    tenantId: string,
    cycleId: string,
    abandonment: CycleAbandonment,
    closeAt: number,
  ): Promise<boolean>;
  /**
   * The poller's listing of a begun cycle stopped before any batch of it was sent (the first send failed, the
   * lease was lost before it): nothing of it reached the scorer, and no summary is owed. Records it as
   * abandoned after no batch (`abandonment.batches` is not read) and takes it out of the open cycles, so
   * that the publisher never closes it. A batch whose send failed only in its answer and that is scored after
   * all still finds the cycle and completes it (partial, or complete when it was the last); dead-lettered
   * instead, it is recorded lost and the cycle closed (`lost`). False, nothing
   * written, for a cycle never begun, listed, published, recorded abandoned by its poller already, or with a
   * batch recorded (scored or lost): then `abandon` records it.
   */
  withdraw(tenantId: string, cycleId: string, abandonment: CycleAbandonment): Promise<boolean>;
  /**
   * The vuln-fetcher has produced this enriched batch of the cycle (idempotent), with the devices it sent as
   * not in their bulk export's snapshot, each with its `firstSeen` (the cycle's own export may list them), in
   * the same round trip.
   */
  enriched(
    tenantId: string,
    cycleId: string,
    batchIndex: number,
    notInSnapshot?: [deviceId: string, firstSeen: string][],
  ): Promise<void>;
  /**
   * Takes the claim on this batch of the cycle for `holder`, for `ttlMs` (a holder that dies lets it lapse),
   * so that one vuln-fetcher at a time asks Defender for its devices: `claimed` (the holder holds it now; a
   * holder that held it already takes it again), `held` (another holder's claim is live), or `enriched` (the
   * batch was recorded as produced, read right after the claim in the same round trip: nothing is to be
   * done, and no claim is kept).
   */
  claimBatch(
    tenantId: string,
    cycleId: string,
    batchIndex: number,
    holder: string,
    ttlMs: number,
  ): Promise<BatchClaimAnswer>;
  /** Extends `holder`'s claim on the batch by `ttlMs` from now; false when it lapsed (or another holds it). */
  renewBatchClaim(
    tenantId: string,
    cycleId: string,
    batchIndex: number,
    holder: string,
    ttlMs: number,
  ): Promise<boolean>;
  /** Gives `holder`'s claim on the batch back, if it still holds it. */
  releaseBatchClaim(tenantId: string, cycleId: string, batchIndex: number, holder: string): Promise<void>;
  /** The devices the cycle's enriched batches sent as not in their export's snapshot, with their `firstSeen`. */
  notInSnapshot(tenantId: string, cycleId: string): Promise<[deviceId: string, firstSeen: string][]>;
  /**
   * How many distinct batches of the cycle with an index below `before` the vuln-fetcher has produced, or were
   * recorded lost (`lost`): each of them is as far as it will get before the cycle's corrections.
   */
  enrichedOrLostBatches(tenantId: string, cycleId: string, before: number): Promise<number>;
  /**
   * A consumer dead-lettered this batch of the cycle (`recordLostBatches`): it will never be scored.
   * Recorded once (idempotent), with its devices when its dead letter told them, only for a cycle begun and
   * not yet published, a batch not scored already, and within the cycle's batches when those are known. The
   * publisher counts a lost batch as settled and its devices as failed; once every batch of the cycle is
   * scored or lost (of an abandoned cycle: every batch it emitted), its close is brought forward to `nowMs`
   * (epoch ms), so the sweep closes it then when no scored batch completes it first. The first batch of a
   * cycle withdrawn (`withdraw`), whose send failed only in its answer, is recorded too, the cycle put back
   * among the open ones to close at `nowMs`. A lost batch scored after all (`recordBatch`) is no longer lost.
   * True when this call recorded it.
   */
  lost(
    tenantId: string,
    cycleId: string,
    batchIndex: number,
    devices: number | undefined,
    nowMs: number,
  ): Promise<boolean>;
  /**
   * Records a scored batch's statistics once: a redelivered batch is not counted twice, and a batch
   * recorded lost before (`lost`) is no longer lost.
   * Resolves whether this call recorded it, how many distinct batches are recorded now, and the
   * cycle as `get` would answer right after (read in the same round trip, so the caller deciding
   * whether the cycle is complete need not ask again). With `lease`, gives the tenant's lease the batch
   * took (`PublishedStore.changed`) back in the same round trip, and records nothing (rejects with
   * `TenantLeaseLostError`, retryable) once the lease is not the batch's any more: it lapsed, and another
   * replica may have sent a summary or tombstones of the tenant since; handled again, the batch takes it again
   * and reads what changed anew. With `commit`, commits the batch's devices (`PublishedStore.commit`) in the
   * same step: both, or neither.
   */
  recordBatch(
    tenantId: string,
    cycleId: string,
    batchIndex: number,
    stats: unknown,
    lease?: TenantLease,
    commit?: { cycleAt: number; devices: DeviceScoreRef[]; options?: PublishOptions },
  ): Promise<{ first: boolean; scoredBatches: number; state: CycleState | null }>;
  /** Every recorded batch's statistics, by batch index. */
  batchStats<T>(tenantId: string, cycleId: string): Promise<Map<number, T>>;
  get(tenantId: string, cycleId: string): Promise<CycleState | null>;
  /**
   * Claims the right to publish the cycle's summary; true for exactly one caller. The same step lists the
   * summary as owed (`PublishedStore.summariesOwed`, claimed at `nowMs`, epoch ms) until it is sent: a
   * claimant that fails or dies before it sends the summary leaves it to a redelivery or to the sweep,
   * never to nobody.
   */
  claimPublication(
    tenantId: string,
    cycleId: string,
    status: 'complete' | 'partial',
    nowMs: number,
  ): Promise<boolean>;
  /**
   * Moves an open cycle's close later, to `closeAtMs` (epoch ms): the vuln-fetcher holds a bulk cycle open
   * while it reads the cycle's export, which at Microsoft's 30 export calls a minute may outlast the poll
   * interval. Never earlier, and never for a cycle abandoned (its close was brought forward on purpose),
   * published or not begun. True when the close moved.
   */
  holdOpen(tenantId: string, cycleId: string, closeAtMs: number): Promise<boolean>;
  /** Open cycles whose deadline (or close held open or brought forward) is at or before `now`. */
  overdue(now: Date): Promise<{ tenantId: string; cycleId: string }[]>;
}

/** Cycle keys stay this long after the deadline, for diagnosis. */
const DEFAULT_RETENTION_MS = 24 * 60 * 60 * 1000;

/** The pending totals' JSON (`listingPending`) as written; undefined when absent or not such totals. */
function parsePendingListing(json: string | undefined): CycleState['pendingListing'] {
  if (json === undefined) return undefined;
  try {
    const totals = JSON.parse(json) as Partial<NonNullable<CycleState['pendingListing']>> | null;
    if (
      typeof totals?.totalBatches !== 'number' ||
      typeof totals.totalDevices !== 'number' ||
      typeof totals.listedAt !== 'string'
    )
      return undefined;
    return totals as NonNullable<CycleState['pendingListing']>;
  } catch {
    return undefined;
  }
}

/** A cycle hash's fields as a CycleState; null when the poller never began the cycle (or it expired). */
function toState(
  tenantId: string,
  cycleId: string,
  fields: Record<string, string>,
  scoredBatches: number,
  lostDevices: string[],
): CycleState | null {
  if (!fields['startedAt'] || !fields['deadlineAt']) return null;
  const state: CycleState = {
    tenantId,
    cycleId,
    startedAt: fields['startedAt'],
    deadlineAt: fields['deadlineAt'],
    scoredBatches,
  };
  if (fields['totalBatches'] !== undefined)
    state.totalBatches = Number(fields['totalBatches']) + Number(fields['correctionBatches'] ?? 0);
  if (fields['correctionBatches'] !== undefined)
    state.correctionBatches = Number(fields['correctionBatches']);
  if (fields['totalDevices'] !== undefined) state.totalDevices = Number(fields['totalDevices']);
  if (fields['listedAt'] !== undefined) state.listedAt = fields['listedAt'];
  const mode = fields['vulnerabilityMode'];
  if (mode === 'per-device' || mode === 'bulk') state.vulnerabilityMode = mode;
  if (fields['note'] !== undefined) state.note = fields['note'];
  if (fields['lastKnownDevices'] !== undefined) state.lastKnownDevices = Number(fields['lastKnownDevices']);
  if (fields['abandonedCode'] !== undefined || fields['abandonedBatches'] !== undefined) {
    state.abandoned = {
      code: fields['abandonedCode'] ?? 'UNEXPECTED',
      at: fields['abandonedAt'] ?? fields['startedAt'],
    };
    if (fields['abandonedBatches'] !== undefined)
      state.abandoned.batches = Number(fields['abandonedBatches']);
    if (fields['abandonedDevices'] !== undefined)
      state.abandoned.devices = Number(fields['abandonedDevices']);
  }
  if (fields['published'] === 'complete' || fields['published'] === 'partial')
    state.published = fields['published'];
  const pending = parsePendingListing(fields['pendingListing']);
  if (pending !== undefined) state.pendingListing = pending;
  if (lostDevices.length > 0) {
    state.lostBatches = lostDevices.length;
    state.lostDevices = lostDevices.reduce((sum, devices) => sum + (Number(devices) || 0), 0);
  }
  return state;
}

/**
 * Keys: `{prefix}cycle:{tenantId}:{cycleId}` (hash), `{prefix}cycle-batches:{tenantId}:{cycleId}`
 * (hash batchIndex → stats JSON), `{prefix}cycle-lost:{tenantId}:{cycleId}` (hash batchIndex → devices,
 * '' when not known), `{prefix}cycle-enriched:{tenantId}:{cycleId}` (set of batch indexes),
 * `{prefix}cycle-not-in-snapshot:{tenantId}:{cycleId}` (hash deviceId → firstSeen),
 * `{prefix}cycle-batch-claim:{tenantId}:{cycleId}:{batchIndex}` (the holder of a batch being enriched),
 * `{prefix}cycle-merged:{tenantId}:{cycleId}` (set of the devices listed merged, `mergedDevicesKey`)
 * and `{prefix}cycles-open` (zset of `tenantId/cycleId` by deadline, or by an abandoned cycle's earlier
 * close, or by the later close of a bulk cycle held open while its export is read). A claim also writes the published store's owed summaries (`summariesOwedKey`); `begin` reads the
 * tenant's status (`tenantStatusKey`) for its last listed device count.
 */
export function createCycleStore(
  redis: Redis,
  prefix: string,
  retentionMs = DEFAULT_RETENTION_MS,
): CycleStore {
  const cycleKey = (tenantId: string, cycleId: string): string => `${prefix}cycle:${tenantId}:${cycleId}`;
  const batchesKey = (tenantId: string, cycleId: string): string =>
    `${prefix}cycle-batches:${tenantId}:${cycleId}`;
  const lostKey = (tenantId: string, cycleId: string): string => `${prefix}cycle-lost:${tenantId}:${cycleId}`;
  const enrichedKey = (tenantId: string, cycleId: string): string =>
    `${prefix}cycle-enriched:${tenantId}:${cycleId}`;
  const notInSnapshotKey = (tenantId: string, cycleId: string): string =>
    `${prefix}cycle-not-in-snapshot:${tenantId}:${cycleId}`;
  const batchClaimKey = (tenantId: string, cycleId: string, batchIndex: number): string =>
    `${prefix}cycle-batch-claim:${tenantId}:${cycleId}:${batchIndex}`;
  const openKey = `${prefix}cycles-open`;
  return {
    async begin(cycle) {
      const deadline = Date.parse(cycle.deadlineAt);
      await redis.eval(
        BEGIN,
        3,
        cycleKey(cycle.tenantId, cycle.cycleId),
        openKey,
        tenantStatusKey(prefix, cycle.tenantId),
        `${cycle.tenantId}/${cycle.cycleId}`,
        cycle.tenantId,
        cycle.cycleId,
        cycle.startedAt,
        cycle.deadlineAt,
        String(deadline),
        String(deadline + retentionMs),
      );
    },
    async listed(tenantId, cycleId, totals) {
      const fields = [
        'totalBatches',
        String(totals.totalBatches),
        'totalDevices',
        String(totals.totalDevices),
        'listedAt',
        totals.listedAt,
      ];
      if (totals.vulnerabilityMode !== undefined) fields.push('vulnerabilityMode', totals.vulnerabilityMode);
      if (totals.note !== undefined && totals.note !== null) fields.push('note', totals.note);
      await redis.eval(
        LISTED,
        4,
        cycleKey(tenantId, cycleId),
        batchesKey(tenantId, cycleId),
        openKey,
        lostKey(tenantId, cycleId),
        `${tenantId}/${cycleId}`,
        String(Date.parse(totals.listedAt)),
        ...fields,
      );
    },
    async listingPending(lease, cycleId, totals) {
      const kept = await redis.eval(
        LISTING_PENDING,
        2,
        cycleKey(lease.tenantId, cycleId),
        pollLeaseKey(prefix, lease.tenantId),
        JSON.stringify(totals),
        lease.token,
      );
      return kept === 1;
    },
    async mergedDevices(tenantId, cycleId, deviceIds) {
      if (deviceIds.length === 0) return;
      await redis.eval(
        MERGED_DEVICES,
        2,
        cycleKey(tenantId, cycleId),
        mergedDevicesKey(prefix, tenantId, cycleId),
        ...deviceIds,
      );
    },
    async dropPendingListing(tenantId, cycleId) {
      await redis.hdel(cycleKey(tenantId, cycleId), 'pendingListing');
    },
    async addCorrections(tenantId, cycleId, batches) {
      return Number(await redis.eval(ADD_CORRECTIONS, 1, cycleKey(tenantId, cycleId), String(batches)));
    },
    async abandon(tenantId, cycleId, abandonment, closeAt) {
      const recorded = await redis.eval(
        ABANDON,
        4,
        cycleKey(tenantId, cycleId),
        batchesKey(tenantId, cycleId),
        openKey,
        lostKey(tenantId, cycleId),
        `${tenantId}/${cycleId}`,
        abandonment.batches === undefined ? '' : String(abandonment.batches),
        abandonment.devices === undefined ? '' : String(abandonment.devices),
        abandonment.code,
        abandonment.at,
        String(Date.parse(abandonment.at)),
        String(closeAt),
      );
      return recorded === 1;
    },
    async withdraw(tenantId, cycleId, abandonment) {
      const withdrawn = await redis.eval(
        WITHDRAW,
        4,
        cycleKey(tenantId, cycleId),
        batchesKey(tenantId, cycleId),
        openKey,
        lostKey(tenantId, cycleId),
        `${tenantId}/${cycleId}`,
        abandonment.devices === undefined ? '' : String(abandonment.devices),
        abandonment.code,
        abandonment.at,
      );
      return withdrawn === 1;
    },
    async enriched(tenantId, cycleId, batchIndex, notInSnapshot = []) {
      const key = enrichedKey(tenantId, cycleId);
      const step = redis.multi().sadd(key, String(batchIndex)).pexpire(key, retentionMs);
      if (notInSnapshot.length > 0) {
        const devices = notInSnapshotKey(tenantId, cycleId);
        step.hset(devices, ...notInSnapshot.flat()).pexpire(devices, retentionMs);
      }
      await step.exec();
    },
    async claimBatch(tenantId, cycleId, batchIndex, holder, ttlMs) {
      const claim = batchClaimKey(tenantId, cycleId, batchIndex);
      // Taken, then the record read, in one round trip (a pipeline, so a write Redis refuses fails with its
      // own reply, OOM or READONLY). A holder records the batch before it gives its claim back, so a claim
      // taken after that finds the record, and one held finds it once the holder recorded it.
      const pipeline = takeOwnedKeyIn(redis.pipeline(), claim, holder, ttlMs);
      const [took, isEnriched] = await replies(
        pipeline.sismember(enrichedKey(tenantId, cycleId), String(batchIndex)),
      );
      const taken = took === 1;
      const enriched = isEnriched === 1;
      if (!enriched) return taken ? 'claimed' : 'held';
      // Nothing is left to do: a claim taken is given back at once.
      if (taken) await releaseOwnedKey(redis, claim, holder);
      return 'enriched';
    },
    renewBatchClaim(tenantId, cycleId, batchIndex, holder, ttlMs) {
      return renewOwnedKey(redis, batchClaimKey(tenantId, cycleId, batchIndex), holder, ttlMs);
    },
    async releaseBatchClaim(tenantId, cycleId, batchIndex, holder) {
      await releaseOwnedKey(redis, batchClaimKey(tenantId, cycleId, batchIndex), holder);
    },
    async notInSnapshot(tenantId, cycleId) {
      const devices = await redis.hgetall(notInSnapshotKey(tenantId, cycleId));
      return Object.entries(devices);
    },
    async enrichedOrLostBatches(tenantId, cycleId, before) {
      return Number(
        await redis.eval(
          ENRICHED_OR_LOST,
          2,
          enrichedKey(tenantId, cycleId),
          lostKey(tenantId, cycleId),
          String(before),
        ),
      );
    },
    async lost(tenantId, cycleId, batchIndex, devices, nowMs) {
      const recorded = await redis.eval(
        LOST,
        4,
        cycleKey(tenantId, cycleId),
        batchesKey(tenantId, cycleId),
        lostKey(tenantId, cycleId),
        openKey,
        `${tenantId}/${cycleId}`,
        String(batchIndex),
        devices === undefined ? '' : String(devices),
        String(Math.round(nowMs)),
        String(retentionMs * 2),
      );
      return recorded === 1;
    },
    async recordBatch(tenantId, cycleId, batchIndex, stats, lease, commit) {
      const batches = batchesKey(tenantId, cycleId);
      const owner = lease && { key: tenantLeaseKey(prefix, lease.tenantId), token: lease.holder };
      const keys = [batches, cycleKey(tenantId, cycleId), lostKey(tenantId, cycleId)];
      const args = [String(batchIndex), JSON.stringify(stats), String(retentionMs * 2)];
      const transaction = owner
        ? redis.multi().eval(RECORD_BATCH, 4, ...keys, owner.key, ...args, owner.token)
        : redis.multi().eval(RECORD_BATCH, 3, ...keys, ...args);
      // In the same transaction, each written only while the lease is still this holder's, as the record is.
      if (commit)
        commitIn(transaction, prefix, tenantId, commit.cycleAt, commit.devices, commit.options, owner);
      if (owner) releaseOwnedKeyIn(transaction, owner.key, owner.token);
      // A step Redis refused inside the transaction (no rollback): the batch is tried again.
      const [recorded] = await replies(transaction);
      if (recorded === 0 && lease) throw new TenantLeaseLostError(lease.tenantId);
      const [added, count, flat, lostDevices] = recorded as [number, number, string[], string[]];
      const fields: Record<string, string> = {};
      for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
      const scoredBatches = Number(count);
      return {
        first: added === 1,
        scoredBatches,
        state: toState(tenantId, cycleId, fields, scoredBatches, lostDevices),
      };
    },
    async batchStats<T>(tenantId: string, cycleId: string) {
      const raw = await redis.hgetall(batchesKey(tenantId, cycleId));
      const stats = new Map<number, T>();
      for (const [index, json] of Object.entries(raw)) stats.set(Number(index), JSON.parse(json) as T);
      return stats;
    },
    async get(tenantId, cycleId) {
      const [fields, scoredBatches, lostDevices] = await Promise.all([
        redis.hgetall(cycleKey(tenantId, cycleId)),
        redis.hlen(batchesKey(tenantId, cycleId)),
        redis.hvals(lostKey(tenantId, cycleId)),
      ]);
      return toState(tenantId, cycleId, fields, scoredBatches, lostDevices);
    },
    async claimPublication(tenantId, cycleId, status, nowMs) {
      const claimed = await redis.eval(
        CLAIM,
        3,
        cycleKey(tenantId, cycleId),
        openKey,
        summariesOwedKey(prefix),
        `${tenantId}/${cycleId}`,
        status,
        String(retentionMs),
        owedSummary(tenantId, cycleId, status),
        String(nowMs),
      );
      return claimed === 1;
    },
    async holdOpen(tenantId, cycleId, closeAtMs) {
      const moved = await redis.eval(
        HOLD_OPEN,
        3,
        cycleKey(tenantId, cycleId),
        openKey,
        mergedDevicesKey(prefix, tenantId, cycleId),
        `${tenantId}/${cycleId}`,
        String(Math.round(closeAtMs)),
        String(retentionMs),
      );
      return moved === 1;
    },
    async overdue(now) {
      const members = await redis.zrangebyscore(openKey, '-inf', now.getTime());
      return members.map((member) => {
        const slash = member.indexOf('/');
        return { tenantId: member.slice(0, slash), cycleId: member.slice(slash + 1) };
      });
    },
  };
}
