import { randomUUID } from 'node:crypto';
import type { Publisher } from '@urs/bus';
import type { Topics } from '@urs/config';
import { vmsRecord, type VmsRiskSummary } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { errorCode, errorMessage, keepRenewing, UrsError } from '@urs/resilience';
import {
  TENANT_LEASE_LOST,
  TENANTS_NOT_REBUILT,
  type CycleState,
  type CycleStore,
  type PublishedStore,
  type ScoreStore,
  type TombstoneHold,
} from '@urs/store';
import type { Registry } from '@urs/telemetry';
import type { InOrder } from './in-order';
import { withTenantLease, type LeaseHeld, type TenantLeasing } from './lease';
import type { PublishedRebuilder } from './rebuild';
import { emptyBands, type BatchStats } from './records';
import { createTombstones } from './tombstones';

export interface CycleCompletionDeps {
  cycles: CycleStore;
  published: PublishedStore;
  scores: Pick<ScoreStore, 'getDeviceScores' | 'remove'>;
  publisher: Publisher;
  topics: Pick<Topics, 'vmsRiskScores' | 'vmsRiskSummary'>;
  logger: Logger;
  metrics: Registry;
  /** Every Nth completed cycle publishes all its devices. */
  snapshotEveryCycles: number;
  /** Completed cycles a device may be absent from before its tombstone. */
  tombstoneAfterCycles: number;
  /**
   * The brake on a cycle that would tombstone much of a tenant's fleet at once (see
   * `PublishedStore.completeCycle`); none by default.
   */
  tombstoneHold?: TombstoneHold;
  /**
   * The queue the handler runs each tenant's batches in. The sweep sends a tenant's summaries (their
   * tombstones and snapshot too) in it, never beside one of the tenant's batches: a tombstone computed
   * before a batch of the next cycle records a device as seen would take that device from VMS. The sweep
   * waits for a tenant's turn at most `sweepQueueWaitMs`, then leaves the tenant to the next sweep.
   */
  inOrder: InOrder;
  /**
   * This replica's tenant leases, shared with the handler. The queue orders only this replica's batches;
   * another replica's batch of the tenant (the one that consumes its partition) holds the tenant's lease
   * from reading what changed to recording the batch, and the sweep sends a tenant's summaries holding it
   * too, or skips the tenant until the next sweep. Without it, another replica's sweep would tombstone a
   * device that batch has just published, or close as partial a cycle whose last batch it is recording.
   * A batch completing its cycle (`tryComplete`) sends the summary holding it as well, waiting for it:
   * the replica handling the tenant's deletion holds it too, so the deletion's tombstones never come
   * before a snapshot or summary computed from the state the deletion forgets.
   */
  leasing: TenantLeasing;
  /**
   * The rebuild of what VMS holds after Redis lost it: a complete cycle's tombstones wait for it (a device
   * missing from the publisher's record would never be tombstoned).
   */
  rebuild: Pick<PublishedRebuilder, 'ensure'>;
  /** How long one sender holds a cycle's summary, renewed while it sends (default 30 s). */
  summaryLockMs?: number;
  /** How long the sweep waits for a tenant's turn in its queue (default 1 s). */
  sweepQueueWaitMs?: number;
  now?: () => Date;
}

/** What the last batch of a cycle says about the totals (the poller also writes them to the cycle store). */
export interface CycleHint {
  cycleStartedAt: string;
  totalBatches?: number;
  totalDevices?: number;
}

export interface CycleCompletion {
  /**
   * Publishes the cycle's summary if every batch is recorded and nobody published it yet, holding the
   * tenant's lease (waiting for it while another replica holds it; a retryable error once `signal`
   * aborted). `known` is the cycle as just read (e.g. by `recordBatch`); without it the cycle is read from
   * the store. Called by the handler, already in the tenant's queue (`inOrder`), not holding the lease.
   */
  tryComplete(
    tenantId: string,
    cycleId: string,
    hint: CycleHint,
    known?: CycleState | null,
    signal?: AbortSignal,
  ): Promise<boolean>;
  /**
   * Publishes every cycle past its deadline as partial, and every summary owed longer than the summary
   * lock, each in its tenant's queue; resolves how many. A tenant whose queue stays busy (its batch or its
   * deletion waiting for the published devices' rebuild, say) is left to the next sweep.
   */
  closeOverdue(): Promise<number>;
}

/** How long one sender holds a cycle's summary; a summary owed longer than this is sent again. */
const DEFAULT_SUMMARY_LOCK_MS = 30_000;

/**
 * How long the sweep waits for a tenant's turn in its queue. A batch takes well under a second, so a tenant
 * with a backlog of batches gets its turn after the one or two under way; a queue held longer (a batch
 * completing its cycle or a deletion waits for the rebuild of what VMS holds, up to 10 minutes) would hold
 * one of the sweep's SWEEP_CONCURRENCY workers, and the next sweep, for as long: the tenant is left to the
 * next sweep instead, and the other tenants' summaries go on.
 */
const DEFAULT_SWEEP_QUEUE_WAIT_MS = 1_000;

/**
 * The longest an owed summary whose send keeps failing (an ACL missing on vms.risk-summary, say) waits for
 * its next try; the wait starts at the summary lock and doubles. Below UrsSummarySweepFailing's 15-minute
 * window, so the alert keeps firing while it fails.
 */
const OWED_RETRY_MAX_MS = 5 * 60_000;

const ms = (later: number, earlier: number): number => Math.max(0, Math.round(later - earlier));

/** Buckets of collect → summary, in seconds: per-device cycles take well under a second, a large first bulk cycle ~10 s. */
const COLLECT_TO_SUMMARY_BUCKETS = [0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800];

/** The code of a send the sweep gave up on while the rebuild runs (`withoutWaitingForRebuild`). */
const REBUILD_PENDING = 'REBUILD_PENDING';

/**
 * What the sweep's sends take as their signal: the sweep never waits for the rebuild of what VMS holds
 * (another replica's may take minutes, and every tenant's partial summaries come behind it). A complete
 * cycle's summary, whose tombstones need the rebuild, is left to a later sweep while it is not done.
 */
const withoutWaitingForRebuild = (): AbortSignal =>
  AbortSignal.abort(
    new UrsError(
      REBUILD_PENDING,
      'the published devices are being rebuilt from vms.risk-scores: the summary is sent by a later sweep',
      { canRetry: true },
    ),
  );

/**
 * The codes of a summary the sweep leaves to a later sweep, not a failure to send (not counted in
 * `urs_summary_sweep_failures_total`, whose alert tells of Kafka refusing summaries), each with what it waits for:
 * the rebuild of what VMS holds, the registrar writing the tenant records back after Redis lost them
 * (`ofDeletedTenant`), or the tenant's lease, which lapsed while the summary was sent (not answered by Redis for
 * its length: another replica may hold it; one a renewal Redis answered found another's is counted all the same, as
 * no Redis alert tells of it; an owed summary waits either way, as after a failed send). UrsMessagesHeld pages for
 * the tenant records only while batches are held for them: with none in flight (the pollers begin no cycle without
 * the records), this line at each sweep and the registrar's log (`tenants rebuilt from urs.tenants` once done) tell
 * it. A Redis away, which loses the lease that way, is told by Redis's own alerts; the line gives its error
 * (`reason`).
 */
const SWEEP_WAITS: ReadonlyMap<string, string> = new Map([
  [REBUILD_PENDING, 'cycle summary waits for the rebuild, sent by a later sweep'],
  [TENANTS_NOT_REBUILT, 'cycle summary waits for the tenant records, sent by a later sweep'],
  [
    TENANT_LEASE_LOST,
    "cycle summary waits for its tenant's lease, lapsed while it was sent: sent by a later sweep",
  ],
]);

/** Devices a snapshot reads, makes records of and sends at a time. */
const SNAPSHOT_CHUNK = 500;

/** Tenants a sweep serves at once: each summary may snapshot a large fleet, so not every overdue tenant. */
const SWEEP_CONCURRENCY = 8;

/**
 * Runs `send` for every item, the items of one tenant one after another in the list's order, SWEEP_CONCURRENCY
 * tenants at a time: a tenant whose queue is busy holds back only its own summaries (and a worker for at most
 * the sweep's wait for its turn).
 */
async function sideBySide<T extends { tenantId: string }>(
  items: readonly T[],
  send: (item: T) => Promise<void>,
): Promise<void> {
  const byTenant = new Map<string, T[]>();
  for (const item of items) {
    const own = byTenant.get(item.tenantId);
    if (own) own.push(item);
    else byTenant.set(item.tenantId, [item]);
  }
  const tenants = [...byTenant.values()];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tenants.length) for (const item of tenants[next++] as T[]) await send(item);
  };
  await Promise.all(Array.from({ length: Math.min(SWEEP_CONCURRENCY, tenants.length) }, worker));
}

/**
 * Why a cycle is partial, as far as its state tells: its listing stopped (the error's code), batches of it
 * were lost on the way (dead-lettered, or not enriched as their tenant was disabled during the cycle).
 * Undefined when it does not tell (its deadline passed with batches missing).
 */
function partialReason(state: CycleState | null): string | undefined {
  const reasons: string[] = [];
  if (state?.abandoned) reasons.push(`listing failed: ${state.abandoned.code}`);
  if (state?.lostBatches)
    reasons.push(`batches lost (dead-lettered, or the tenant disabled): ${state.lostBatches}`);
  return reasons.length > 0 ? reasons.join('; ') : undefined;
}

/** A send's summary lock, as the send goes on: `check` what its renewals found, `confirm` with Redis. */
interface SummaryLock {
  /** Throws `SummaryLockLost` once a renewal found the lock lapsed (or the summary sent). */
  check(): void;
  /** Renews the lock; throws `SummaryLockLost` when it no longer holds this send's token. */
  confirm(): Promise<void>;
}

/** The summary lock lapsed during a send: it stops, sending nothing more, and leaves the summary owed. */
class SummaryLockLost extends Error {
  constructor() {
    super('the summary lock lapsed during the send');
  }
}

/**
 * Cycle completion: a cycle is complete when its totals are known and every batch was recorded; one
 * publisher wins the claim and publishes the summary (plus the snapshot and tombstones of a complete
 * cycle). A cycle past its deadline is closed as partial by the sweep. Device records are not held
 * back for completion: they are published batch by batch (see the handler). A cycle its poller abandoned
 * (`CycleStore.abandon`) is closed as partial when the batches it emitted are in, or by the sweep at the
 * earlier close the poller gave it. A batch dead-lettered on the way (`CycleStore.lost`) is settled too: a
 * cycle whose every batch is scored or lost is closed as partial at once, by its last scored batch or, when
 * the lost one came last, by the next sweep (its close brought forward to then).
 */
export function createCycleCompletion(deps: CycleCompletionDeps): CycleCompletion {
  const now = deps.now ?? (() => new Date());
  const summaryLockMs = deps.summaryLockMs ?? DEFAULT_SUMMARY_LOCK_MS;
  const sweepQueueWaitMs = deps.sweepQueueWaitMs ?? DEFAULT_SWEEP_QUEUE_WAIT_MS;
  const summaries = deps.metrics.counter(
    'urs_cycle_summaries_total',
    'Cycle summaries published, by status.',
  );
  const lag = deps.metrics.histogram(
    'urs_score_to_publish_seconds',
    "From a cycle's last score to its summary, in seconds, by status: a partial cycle's includes its wait for the batches that never came.",
  );
  const collectToSummary = deps.metrics.histogram(
    'urs_collect_to_summary_seconds',
    "From a cycle's last vulnerability response to its summary, in seconds, by status: the benchmark's collect → VMS.",
    COLLECT_TO_SUMMARY_BUCKETS,
  );
  const records = deps.metrics.counter(
    'urs_vms_records_total',
    'Records produced to vms.risk-scores, by kind.',
  );
  const tombstone = createTombstones({
    published: deps.published,
    scores: deps.scores,
    publisher: deps.publisher,
    topic: deps.topics.vmsRiskScores,
    metrics: deps.metrics,
  });
  const tombstonesHeld = deps.metrics.counter(
    'urs_vms_tombstones_held_total',
    "Devices absent long enough to be tombstoned whose tombstone a completed cycle held back: they were more than URS_TOMBSTONE_MAX_SHARE_PERCENT of the tenant's devices (counted once per completed cycle that holds them, however often its summary is sent).",
  );
  const sweepFailures = deps.metrics.counter(
    'urs_summary_sweep_failures_total',
    'Overdue or owed cycle summaries the deadline sweep could not send (tried again by a later sweep, an owed one after a wait growing to 5 minutes).',
  );
  // Served at 0 from the start: UrsTombstonesHeld and UrsSummarySweepFailing count their increase, which the
  // first event alone (the series appearing at 1) would not show.
  tombstonesHeld.init();
  sweepFailures.init();

  /**
   * Sends every device the cycle names, in device id order, SNAPSHOT_CHUNK records a send. Only the ids are
   * held whole: each chunk's scores are read, made records and sent before the next is read (a fleet's
   * scores and records at once took ~86 MB at 100,000 devices, and several tenants may snapshot at once).
   */
  async function snapshot(
    tenantId: string,
    cycleAt: number,
    held: LeaseHeld,
    lock: SummaryLock,
  ): Promise<number> {
    held.throwIfLost();
    const ids = await deps.published.seenSince(tenantId, cycleAt);
    let sent = 0;
    for (let start = 0; start < ids.length; start += SNAPSHOT_CHUNK) {
      held.throwIfLost();
      lock.check();
      const stored = await deps.scores.getDeviceScores(tenantId, ids.slice(start, start + SNAPSHOT_CHUNK));
      const chunk = stored.map((score) => vmsRecord(tenantId, score.cycleId, score.scoredAt, score.device));
      if (chunk.length === 0) continue;
      held.throwIfLost();
      await deps.publisher.send(deps.topics.vmsRiskScores, 'urs/vms-risk-score', chunk);
      sent += chunk.length;
    }
    records.inc({ kind: 'snapshot' }, sent);
    return sent;
  }

  async function publish(
    state: CycleState | null,
    tenantId: string,
    cycleId: string,
    status: 'complete' | 'partial',
    hint: CycleHint,
    signal: AbortSignal | undefined,
    leased: LeaseHeld,
    lock: SummaryLock,
  ): Promise<void> {
    const log = deps.logger.child({ tenantId, cycleId });
    leased.throwIfLost();
    const stats = await deps.cycles.batchStats<BatchStats>(tenantId, cycleId);
    const bands = emptyBands();
    let scored = 0;
    let incomplete = 0;
    let changed = 0;
    let collectedAt: string | null = null;
    let lastScoredMs = 0;
    for (const batch of stats.values()) {
      scored += batch.devices;
      incomplete += batch.incomplete;
      changed += batch.changed;
      for (const [band, count] of Object.entries(batch.bands)) bands[band as keyof typeof bands] += count;
      if (collectedAt === null || batch.collectedAt > collectedAt) collectedAt = batch.collectedAt;
      lastScoredMs = Math.max(lastScoredMs, Date.parse(batch.scoredAt));
    }
    // A correction moves devices out of the bands their first batch counted them in. If that batch was
    // never counted (dead-lettered, or its score stored but never emitted), the move would leave a band
    // short or below zero; a partial cycle's counts stay at zero or above.
    const short = Object.entries(bands).filter(([, count]) => count < 0);
    if (short.length > 0 || incomplete < 0) {
      log.warn('corrections moved devices whose first batch was not counted', {
        bands: Object.fromEntries(short),
        incomplete,
      });
      for (const [band] of short) bands[band as keyof typeof bands] = 0;
      incomplete = Math.max(0, incomplete);
    }
    const cycleStartedAt = state?.startedAt ?? hint.cycleStartedAt;
    const cycleAt = Date.parse(cycleStartedAt);
    // A cycle never listed in full (its poller abandoned it or died) has no total of its own: the best known
    // is the tenant's last listed count, or what its poller had listed before it stopped. Either way at
    // least the devices scored and those of its lost batches, so that the devices listed and never scored
    // show as failed, not as 0. (A listed total counts the lost batches' devices already.)
    const total =
      state?.totalDevices ??
      hint.totalDevices ??
      Math.max(
        scored + (state?.lostDevices ?? 0),
        state?.lastKnownDevices ?? 0,
        state?.abandoned?.devices ?? 0,
      );
    let snapshotted = false;
    let tombstones = 0;
    if (status === 'complete') {
      await deps.rebuild.ensure(signal);
      leased.throwIfLost();
      const completed = await deps.published.completeCycle(
        tenantId,
        cycleId,
        cycleAt,
        deps.tombstoneAfterCycles,
        deps.tombstoneHold,
      );
      const { first, sequence, gone, held, knownDevices, snapshotSent } = completed;
      if (held > 0) {
        // A summary sent again (its first send failed) holds what the first call held: counted once, so
        // UrsTombstonesHeld counts the cycle once.
        if (first) tombstonesHeld.inc({}, held);
        log.warn(
          "tombstones held: more of the tenant's devices are missing from its last cycles than may go at once; check its Defender listing (an empty or cut answer, a changed app scope) before they are sent",
          {
            held,
            knownDevices,
            listedDevices: total,
            maxSharePercent: deps.tombstoneHold?.maxSharePercent,
            sentAfterCycles: deps.tombstoneHold?.cycles,
          },
        );
      }
      // Kept as sent with the cycle's counts: a summary sent again (its send failed) sends neither its
      // tombstones nor its snapshot again, which for a large fleet's snapshot would be every record.
      // Each send goes only while the tenant's lease holds (`leased`): what `completeCycle` listed may be stale
      // once another replica could hold it (a batch of the next cycle seeing a device again). A part once
      // sent is kept as sent all the same.
      if (gone.length > 0) {
        lock.check();
        await tombstone(tenantId, gone, cycleAt, leased);
        await deps.published.markCycleSent(tenantId, cycleId, 'tombstones');
      }
      // Counted at the cycle's first completion: a summary sent again after its tombstones went out (and
      // their devices were forgotten) still says how many.
      tombstones = completed.tombstones;
      if (sequence % deps.snapshotEveryCycles === 0) {
        if (!snapshotSent) {
          await snapshot(tenantId, cycleAt, leased, lock);
          await deps.published.markCycleSent(tenantId, cycleId, 'snapshot');
        }
        snapshotted = true;
      }
    }
    const publishedAt = now();
    const summary: VmsRiskSummary = {
      schemaVersion: 1,
      tenantId,
      cycleId,
      status,
      cycleStartedAt,
      collectedAt,
      publishedAt: publishedAt.toISOString(),
      devices: { total, scored, incomplete, failed: Math.max(0, total - scored) },
      bands,
      published: { changed, snapshot: snapshotted, tombstones },
      timings: {
        collectMs: collectedAt === null ? 0 : ms(Date.parse(collectedAt), cycleAt),
        scoreToPublishMs: lastScoredMs === 0 ? 0 : ms(publishedAt.getTime(), lastScoredMs),
        cycleMs: ms(publishedAt.getTime(), cycleAt),
      },
    };
    // Asked of Redis right before the send: a sender stalled past its lock (a long pause, Redis out of reach)
    // whose lock another sender took, or whose summary another sent, sends none.
    await lock.confirm();
    leased.throwIfLost();
    await deps.publisher.send(deps.topics.vmsRiskSummary, 'urs/vms-risk-summary', [
      { key: tenantId, value: summary },
    ]);
    summaries.inc({ status });
    if (lastScoredMs > 0) lag.observe(summary.timings.scoreToPublishMs / 1000, { status });
    if (collectedAt !== null)
      collectToSummary.observe(ms(publishedAt.getTime(), Date.parse(collectedAt)) / 1000, { status });
    const reason = status === 'partial' ? partialReason(state) : undefined;
    log.info('cycle published', {
      status,
      ...(reason === undefined ? {} : { reason }),
      devices: summary.devices,
      changed,
      snapshot: snapshotted,
      tombstones,
      ...summary.timings,
    });
  }

  /**
   * Sends a claimed cycle's summary under the summary lock, so one sender at a time and once in all. The
   * claim listed it as owed: a sender that fails or dies before this leaves it to a redelivery or the sweep.
   */
  async function sendOwed(
    state: CycleState | null,
    tenantId: string,
    cycleId: string,
    status: 'complete' | 'partial',
    hint: CycleHint,
    signal: AbortSignal | undefined,
    held: LeaseHeld,
  ): Promise<boolean> {
    held.throwIfLost();
    if (await deps.published.ofDeletedTenant(tenantId, Date.parse(state?.startedAt ?? hint.cycleStartedAt))) {
      // The tenant was deleted while the cycle was open: VMS gets tombstones for its devices, no summary.
      held.throwIfLost();
      await deps.published.summarySent(tenantId, cycleId);
      deps.logger.debug('summary of a deleted tenant not sent', { tenantId, cycleId });
      return false;
    }
    held.throwIfLost();
    // A token new for each send: the lock is this send's only, so a sender whose lock lapsed and was taken
    // by another neither extends nor gives back the other's, and stops before it sends.
    const token = randomUUID();
    if (!(await deps.published.lockSummary(tenantId, cycleId, token, summaryLockMs))) return false;
    let lost = false;
    const renew = async (): Promise<boolean> => {
      const locked = await deps.published.renewSummaryLock(tenantId, cycleId, token, summaryLockMs);
      if (!locked) lost = true;
      return locked;
    };
    const lock: SummaryLock = {
      check() {
        if (lost) throw new SummaryLockLost();
      },
      async confirm() {
        if (!(await renew())) throw new SummaryLockLost();
      },
    };
    // A complete cycle's snapshot of a large fleet may outlast the lock: held while it goes on, or another
    // publisher's sweep would send the snapshot and the summary a second time.
    const stopRenewing = keepRenewing(renew, summaryLockMs / 3, {
      onError: (error) =>
        deps.logger.warn('summary lock not renewed', { tenantId, cycleId, reason: errorMessage(error) }),
    });
    try {
      await publish(state, tenantId, cycleId, status, hint, signal, held, lock);
    } catch (error) {
      if (error instanceof SummaryLockLost) {
        // Not ours to give back, nor to record as sent: its holder sends it, or the sweep once it lapses.
        deps.logger.warn('summary lock lapsed while sending: summary left to the sender holding it', {
          tenantId,
          cycleId,
        });
        return false;
      }
      await deps.published.unlockSummary(tenantId, cycleId, token);
      throw error;
    } finally {
      stopRenewing();
    }
    await deps.published.summarySent(tenantId, cycleId, token);
    return true;
  }

  /**
   * Runs one of the sweep's sends holding the tenant's lease (see `CycleCompletionDeps.leasing`); false,
   * nothing sent, while another replica holds it: the next sweep tries again.
   */
  async function underLease(tenantId: string, send: (held: LeaseHeld) => Promise<boolean>): Promise<boolean> {
    const lease = { tenantId, ...deps.leasing };
    const sent = await withTenantLease(deps.published, lease, deps.logger, 'skip', send);
    if (sent === null)
      deps.logger.debug('tenant leased by another replica, its summaries left to the next sweep', {
        tenantId,
      });
    return sent ?? false;
  }

  /**
   * The total a cycle's last batch carried, for a correction batch (which carries none) of a cycle whose
   * poller's listing is missing: the corrections come after the last batch, and nothing else would complete
   * the cycle before its deadline closed it as partial. Read only for a cycle that has corrections.
   */
  async function carriedTotal(
    state: CycleState | null,
    tenantId: string,
    cycleId: string,
  ): Promise<number | undefined> {
    if (state?.correctionBatches === undefined) return undefined;
    const stats = await deps.cycles.batchStats<BatchStats>(tenantId, cycleId);
    const carried = [...stats.values()].flatMap((batch) => batch.totalBatches ?? []);
    return carried.length > 0 ? Math.max(...carried) : undefined;
  }

  /**
   * What a cycle owes once a batch of it is recorded, as `state` says: its summary, claimed already or
   * to claim, with this status; null when nothing is due yet.
   */
  async function due(
    state: CycleState | null,
    tenantId: string,
    cycleId: string,
    hint: CycleHint,
  ): Promise<{ status: 'complete' | 'partial'; claimed: boolean } | null> {
    // Claimed before: normally sent, unless the send failed (then this redelivery sends it).
    if (state?.published) return { status: state.published, claimed: true };
    // Dead-lettered on the way: never scored, as settled as the scored ones.
    const lost = state?.lostBatches ?? 0;
    const totalBatches =
      state?.totalBatches ?? hint.totalBatches ?? (await carriedTotal(state, tenantId, cycleId));
    if (totalBatches === undefined) {
      // Abandoned by its poller: partial once every batch it emitted is in (or at the close it was given,
      // the only close of a cycle whose poller died: how many batches it emitted is not known).
      const emitted = state?.abandoned?.batches;
      if (state === null || emitted === undefined || state.scoredBatches + lost < emitted) return null;
      return { status: 'partial', claimed: false };
    }
    const recorded = state?.scoredBatches ?? (await deps.cycles.batchStats(tenantId, cycleId)).size;
    if (recorded >= totalBatches) return { status: 'complete', claimed: false };
    return recorded + lost < totalBatches ? null : { status: 'partial', claimed: false };
  }

  return {
    async tryComplete(tenantId, cycleId, hint, known, signal) {
      const state = known === undefined ? await deps.cycles.get(tenantId, cycleId) : known;
      const owed = await due(state, tenantId, cycleId, hint);
      if (owed === null) return false;
      // Sent holding the tenant's lease, waiting for it: the batch gave it back when it was recorded, and
      // a deletion of the tenant on another replica must not tombstone the tenant's devices between this
      // send's check that the tenant is not deleted and its snapshot and summary.
      const lease = { tenantId, ...deps.leasing };
      return withTenantLease(deps.published, lease, deps.logger, { wait: signal }, async (held) => {
        const { status, claimed } = owed;
        held.throwIfLost();
        if (!claimed && !(await deps.cycles.claimPublication(tenantId, cycleId, status, now().getTime())))
          return false;
        return sendOwed(state, tenantId, cycleId, status, hint, signal, held);
      });
    },
    async closeOverdue() {
      let closed = 0;
      // Tenants whose queue stayed busy past the wait for their turn: their other cycles are not waited for
      // again in this sweep. Still listed (not claimed, not deferred), they are looked at again by the next.
      const busy = new Set<string>();
      // Each cycle on its own: one that cannot be sent is logged and tried again at the next sweep,
      // and never holds back another tenant's summary behind it (nor does a tenant whose queue is busy:
      // tenants are swept side by side, a few at a time, and one whose turn does not come within the wait
      // is left to the next sweep; nor one another replica holds: it is skipped).
      const each = async (
        tenantId: string,
        cycleId: string,
        send: (held: LeaseHeld) => Promise<boolean>,
        onFailure?: () => Promise<void>,
      ) => {
        if (busy.has(tenantId)) return;
        try {
          const sent = await deps.inOrder.within(tenantId, sweepQueueWaitMs, () =>
            underLease(tenantId, send),
          );
          if (sent === undefined) {
            busy.add(tenantId);
            deps.logger.debug("tenant's queue busy, its summaries left to the next sweep", {
              tenantId,
              cycleId,
              waitedMs: sweepQueueWaitMs,
            });
          } else if (sent) closed++;
        } catch (error) {
          const code = errorCode(error);
          const waits = SWEEP_WAITS.get(code);
          const cause = (error as { cause?: unknown }).cause;
          // A lease lost with no Redis fault as its cause (a renewal Redis answered found it another's, taken
          // or evicted after a stall) is counted as a failure: no Redis alert tells of it.
          const leaseLost = code === TENANT_LEASE_LOST;
          if (waits !== undefined && !(leaseLost && cause === undefined)) {
            deps.logger.info(waits, {
              tenantId,
              cycleId,
              ...(cause === undefined ? {} : { reason: errorMessage(cause) }),
            });
            // An owed summary waits as after a failed send: every replica's sweep would try it (and send part
            // of a snapshot again) at every sweep otherwise.
            if (leaseLost) await deferAfter(tenantId, cycleId, onFailure);
            return;
          }
          sweepFailures.inc();
          deps.logger.warn('cycle summary not sent, tried again at the next sweep', {
            tenantId,
            cycleId,
            code: errorCode(error),
            reason: errorMessage(error),
          });
          await deferAfter(tenantId, cycleId, onFailure);
        }
      };
      const deferAfter = async (tenantId: string, cycleId: string, onFailure?: () => Promise<void>) => {
        await onFailure?.().catch((deferError: unknown) =>
          deps.logger.warn('owed cycle summary not deferred, tried again at the next sweep', {
            tenantId,
            cycleId,
            reason: errorMessage(deferError),
          }),
        );
      };
      /**
       * A cycle whose keys expired (a day past its deadline, no sweep since) owes its summary no more: one now
       * would give VMS a cycle start and counts it never had, and count an old cycle as the tenant's latest.
       */
      const dropExpired = async (tenantId: string, cycleId: string, status: string): Promise<false> => {
        await deps.published.dropOwedSummary(tenantId, cycleId);
        deps.logger.warn('cycle summary owed past the cycle it summed up, dropped unsent', {
          tenantId,
          cycleId,
          status,
        });
        return false;
      };
      const overdue = await deps.cycles.overdue(now());
      await sideBySide(overdue, ({ tenantId, cycleId }) =>
        each(tenantId, cycleId, async (held) => {
          held.throwIfLost();
          const state = await deps.cycles.get(tenantId, cycleId);
          // Every batch recorded (the publisher stopped before claiming it): complete, not partial.
          const status =
            state?.totalBatches !== undefined && state.scoredBatches >= state.totalBatches
              ? 'complete'
              : 'partial';
          held.throwIfLost();
          if (!(await deps.cycles.claimPublication(tenantId, cycleId, status, now().getTime()))) return false;
          if (state === null) return dropExpired(tenantId, cycleId, status);
          const hint = { cycleStartedAt: state.startedAt };
          return sendOwed(state, tenantId, cycleId, status, hint, withoutWaitingForRebuild(), held);
        }),
      );
      // Summaries claimed but never sent (a crash or a failed send after the claim): sent late, not lost.
      // One whose send fails again waits longer each time (every replica's sweep would try it every
      // sweep otherwise): listed again once its lock would have lapsed, from a wait growing to a cap.
      const owed = await deps.published.summariesOwed(now().getTime() - summaryLockMs);
      await sideBySide(owed, (summary) => {
        const { tenantId, cycleId, status } = summary;
        return each(
          tenantId,
          cycleId,
          async (held) => {
            held.throwIfLost();
            const state = await deps.cycles.get(tenantId, cycleId);
            if (state === null) return dropExpired(tenantId, cycleId, status);
            const hint = { cycleStartedAt: state.startedAt };
            return sendOwed(state, tenantId, cycleId, status, hint, withoutWaitingForRebuild(), held);
          },
          async () => {
            // The wait counts from the failure, not from the start of the sweep: a send failing minutes
            // into a slow sweep would otherwise be listed again at the next one.
            const listedFrom = now().getTime() - summaryLockMs;
            const backoff = { firstMs: summaryLockMs, maxMs: Math.max(summaryLockMs, OWED_RETRY_MAX_MS) };
            await deps.published.deferOwedSummary(tenantId, cycleId, status, listedFrom, backoff);
          },
        );
      });
      return closed;
    },
  };
}
