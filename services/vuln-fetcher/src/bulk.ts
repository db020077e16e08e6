import { randomUUID } from 'node:crypto';
import type { DeviceBatch } from '@urs/contracts';
import type { Logger } from '@urs/logging';
import { canRetry, errorMessage, isInfrastructureFault, keepRenewing } from '@urs/resilience';
import type { CycleStore, LatestExport, PinnedExport } from '@urs/store';
import { createExportReader, readsExportLast, type ExportReaderDeps } from './bulk-export';
import { storedCorrections } from './corrections';
import { withoutExport, type TenantEnrichment } from './enrichment';
import { sleepUntil, throwIfStopping } from './interruption';
import { usable, type ExportApp } from './latest-export';
import { isTenantWideCode, type VulnerabilitySource } from './sources';

export interface BulkDeps extends Omit<ExportReaderDeps, 'owner'> {
  /** How long a batch waits for another replica's bulk export of its cycle, in milliseconds. */
  bulkWaitMs: number;
  /** How long a bulk export claim holds before another replica may take over, in milliseconds. */
  bulkClaimMs: number;
  /** Pause between two looks at another replica's bulk export, in milliseconds. Default 200. */
  bulkPollMs?: number;
  /**
   * Where a cycle whose export is read here is held open past its deadline (`CycleStore.holdOpen`), and
   * where a cycle's last batch is found enriched or recorded lost, or the cycle published or gone (the next
   * cycle waits for it until then).
   */
  cycles: Pick<CycleStore, 'holdOpen' | 'enrichedOrLostBatches' | 'get'>;
  /**
   * Longest a bulk cycle is held open while its export is read, from the cycle's start, in milliseconds;
   * batches waiting for the read wait up to then too. Default BULK_CYCLE_MAX_MS.
   */
  bulkCycleMaxMs?: number;
}

/** Two hours: twice the longest a cycle's deadline is (the poller's URS_CYCLE_MAX_MS default). */
export const BULK_CYCLE_MAX_MS = 7_200_000;

/** A tenant's bulk cycle in this process: its batches in flight, and when they may start. */
export interface BulkCycle {
  cycleId: string;
  /** When the cycle started (epoch ms): a batch of an older cycle, come again, waits for no newer one. */
  startedAt: number;
  /** The tenant's bulk cycle handled here before this one, whose last batch this one waits for. */
  previous?: BulkCycle;
  ready: Promise<unknown>;
  running: Set<Promise<void>>;
  /**
   * The cycle's last batch from when a try of it here failed, retryably, until a try of it succeeds: the
   * bus tries it again in place, and only its success makes the cycle's export the tenant's latest.
   */
  lastFailed?: DeviceBatch;
  /**
   * Until when (epoch ms) the cycle's batches wait for the previous cycle's failed last batch: set by the
   * first of them to wait, so that the cycle waits once, not once per batch.
   */
  previousWaitUntil?: number;
  /**
   * The latest export pinned for the cycle (`latestOf`), once a batch here got it: a pin never changes, so
   * the cycle's later batches here take it without asking Redis.
   */
  pinned?: LatestExport;
}

/** Bulk enrichment: one export per tenant and cycle, read by one replica, its batches enriched from it. */
export interface BulkEnrichment {
  /**
   * The batch enriched from its cycle's export, read here under a claim or waited for while another replica
   * reads it, or from the tenant's latest export when the cycle reads its own last.
   */
  enrich(
    batch: DeviceBatch,
    app: ExportApp,
    source: VulnerabilitySource,
    heartbeat: () => Promise<void>,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<TenantEnrichment>;
  /** The batch's entry in `bulkCycles`, a new one for a new cycle; none outside bulk cycles read last. */
  cycleOf(batch: DeviceBatch): BulkCycle | undefined;
  /**
   * Waits for the tenant's previous bulk cycle handled here (`cycle.ready`), holding the batch's own cycle
   * open meanwhile: the poller starts the next cycle at the interval even while the previous one's export
   * is still read, and the next one's deadline would pass behind it.
   */
  afterPrevious(
    batch: DeviceBatch,
    cycle: BulkCycle,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<void>;
  /**
   * A try of the batch ended: `error` when it failed, and `handledAgain`, whether the bus tries it again (the
   * message's `handledAgainAfter`; by default whether the failure is one it tries again).
   */
  tried(batch: DeviceBatch, cycle: BulkCycle, error?: unknown, handledAgain?: boolean): void;
  /** The batch ended, sent or not: an export claim it held is no longer held by a batch here. */
  ended(batch: DeviceBatch): void;
}

export function createBulkEnrichment(deps: BulkDeps): BulkEnrichment {
  const { now } = deps;
  const owner = randomUUID();
  const { fromExport, runBulkExport, lastFromExport } = createExportReader({ ...deps, owner });
  /**
   * The bulk exports this process is running, by `tenantId/cycleId`, aborted when one ends: a batch of the
   * same cycle waiting here wakes at once instead of at its next look at the cache.
   */
  const runningExports = new Map<string, AbortController>();
  /**
   * The cycles whose export claim a batch handled here holds, with that batch's index: the claim is held
   * until the batch ends (a last batch that reads the export last stores it only after producing).
   */
  const claims = new Map<string, number>();
  /**
   * Per tenant, the bulk cycle whose batches this process handles now, with those in flight (waiting
   * included) and when they may start. The batches of the next cycle start once the previous cycle's are
   * done: its last batch moves the latest export they are enriched from, and two batches of a tenant run
   * at once, so the two cycles could overlap. One entry per bulk tenant, replaced by its next cycle.
   */
  const bulkCycles = new Map<string, BulkCycle>();

  const renewEveryMs = Math.max(10, Math.floor(deps.bulkClaimMs / 3));
  const cycleCapOf = (batch: DeviceBatch): number =>
    Date.parse(batch.cycleStartedAt) + (deps.bulkCycleMaxMs ?? BULK_CYCLE_MAX_MS);
  /**
   * A cycle's deadline is its poll interval (at most an hour), but its export is read at Microsoft's 30 calls
   * a minute: a large fleet's (300 pages of 50,000 rows, ~275,000 devices) outlasts a 10-minute interval, and
   * the publisher closed the cycle as partial, every device failed. While the read goes on (and while the
   * tenant's next cycle waits here behind it) the cycle is held open a claim period ahead, so a reader that
   * dies lets it close a claim period later; never past its cap, URS_BULK_CYCLE_MAX_MS from its start.
   */
  const holdCycleOpen = (batch: DeviceBatch): Promise<boolean> =>
    deps.cycles.holdOpen(
      batch.tenantId,
      batch.cycleId,
      Math.min(Date.now() + deps.bulkClaimMs, cycleCapOf(batch)),
    );

  /**
   * The latest export the batch's cycle is enriched from: the tenant's latest, if usable, pinned for the
   * cycle by the first of its batches to ask (`pinLatest`), and the one pinned for every later batch of it,
   * its last batch included, which compares the cycle's own export with that one. The tenant's latest may
   * move while the cycle runs: the previous cycle's last batch failed and, tried again (here or on another
   * replica) after one of this cycle's batches was enriched from the latest before it, made its own export
   * the latest. Compared with that newer one, a device whose summary changed between the two would get no
   * correction and keep the older export's vulnerabilities. Once pinned, the cycle's later batches here
   * take it from `BulkCycle.pinned`: no more round trips (`forgetPinned` once a read finds its export gone).
   * A pin whose export is gone comes back `gone`: nothing to enrich from, but what the last batch compares
   * with (every device corrected, as earlier batches may have been enriched from it).
   */
  async function pinnedOf(batch: DeviceBatch, app: ExportApp): Promise<PinnedExport | null> {
    const cycle = cycleHere(batch);
    if (cycle?.pinned) return usable(batch, app, cycle.pinned);
    const latest = usable(batch, app, await deps.bulkCache.latest(batch.tenantId));
    const pinned = await deps.bulkCache.pinLatest(batch.tenantId, batch.cycleId, latest);
    if (cycle && pinned !== null && !pinned.gone) cycle.pinned = pinned;
    return usable(batch, app, pinned);
  }

  /** The latest export the batch is enriched from (`pinnedOf`), null when none is pinned or it is gone. */
  async function latestOf(batch: DeviceBatch, app: ExportApp): Promise<LatestExport | null> {
    const pinned = await pinnedOf(batch, app);
    return pinned?.gone ? null : pinned;
  }

  /** The batch's cycle as this process handles it, if it does: the tenant's current one or the one before. */
  function cycleHere(batch: DeviceBatch): BulkCycle | undefined {
    const current = bulkCycles.get(batch.tenantId);
    return [current, current?.previous].find((entry) => entry?.cycleId === batch.cycleId);
  }

  /**
   * The export the batch's cycle pinned is gone (evicted under Redis's maxmemory, flushed, expired): read as
   * it is, each device would be absent from it, sent on with no vulnerabilities. Forgotten here, the pin is
   * asked of Redis again, which names it gone: the batch goes on as in a cycle without a usable latest
   * export, from the cycle's own, and the cycle's last batch corrects every device.
   */
  function forgetPinned(batch: DeviceBatch, latest: LatestExport, log: Logger): void {
    const cycle = cycleHere(batch);
    if (cycle?.pinned?.cycleId === latest.cycleId) delete cycle.pinned;
    log.warn("the latest export the cycle was enriched from is gone from Redis: reading the cycle's own", {
      latestCycleId: latest.cycleId,
    });
  }

  async function bulk(
    batch: DeviceBatch,
    app: ExportApp,
    source: VulnerabilitySource,
    heartbeat: () => Promise<void>,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<TenantEnrichment> {
    const deadline = Date.now() + deps.bulkWaitMs;
    const holdOpen = (): Promise<unknown> => holdCycleOpen(batch);
    // The cycle's last batch reads the export itself when the earlier ones were enriched from the latest.
    const readLast =
      readsExportLast(deps.exportLast, batch) && batch.lastBatch && batch.batchIndex > 0
        ? await pinnedOf(batch, app)
        : null;
    for (;;) {
      const state = await deps.bulkCache.state(batch.tenantId, batch.cycleId);
      if (state.state === 'ready') {
        const enrichment = await fromExport(batch, batch.cycleId, state.collectedAt, state.generatedTime);
        // Gone since the look at its state: the next one finds it absent.
        if (enrichment === null) continue;
        if (readLast === null) return enrichment;
        const corrections = await storedCorrections(deps.bulkCache, batch, readLast);
        const snapshot = { generatedTime: state.generatedTime, collectedAt: state.collectedAt };
        return { ...enrichment, corrections: { ...corrections, snapshot } };
      }
      // Pending, the export is read by the cycle's last batch (or by a first cycle's batch: then no latest).
      if (
        (state.state === 'absent' || state.state === 'pending') &&
        readsExportLast(deps.exportLast, batch) &&
        !batch.lastBatch
      ) {
        const latest = await latestOf(batch, app);
        if (latest !== null) {
          const enrichment = await fromExport(
            batch,
            latest.cycleId,
            latest.collectedAt,
            latest.generatedTime,
          );
          if (enrichment !== null) return enrichment;
          forgetPinned(batch, latest, log);
          continue;
        }
      }
      if (state.state === 'failed') {
        const fetchError = { code: state.code, message: state.message };
        return {
          ...withoutExport(batch, fetchError, now()),
          ...(isTenantWideCode(state.code) ? { tenantFailure: fetchError } : {}),
        };
      }
      const cycleKey = `${batch.tenantId}/${batch.cycleId}`;
      // A claim of this process that no batch handled here holds was left by a failed try of a batch.
      const leftHere = state.state === 'pending' && state.owner === owner && !claims.has(cycleKey);
      if (
        leftHere ||
        (state.state === 'absent' &&
          (await deps.bulkCache.claim(batch.tenantId, batch.cycleId, owner, deps.bulkClaimMs)))
      ) {
        claims.set(cycleKey, batch.batchIndex);
        const ended = new AbortController();
        runningExports.set(cycleKey, ended);
        // The claim lasts URS_BULK_CLAIM_MS (so a crashed reader's lapses); a read that takes longer keeps
        // it, or the cycle's other batches would start a second read beside this one.
        const stopRenewing = keepRenewing(
          async () => {
            const held = await deps.bulkCache.renew(batch.tenantId, batch.cycleId, owner, deps.bulkClaimMs);
            if (held) await holdOpen();
            return held;
          },
          renewEveryMs,
          {
            onLost: () =>
              log.warn('bulk export claim lapsed while it was read', { claimMs: deps.bulkClaimMs }),
            onError: (error) => log.warn('bulk export claim not renewed', { reason: errorMessage(error) }),
          },
        );
        try {
          await holdOpen();
          // The cycle's batches are enriched from the export, scored and published after the read: held open
          // a claim period from its end.
          if (readLast) {
            const last = await lastFromExport(batch, source, readLast, log, signal);
            if (last !== null) {
              await holdOpen();
              return last;
            }
          } else await runBulkExport(batch, source, log, signal);
          await holdOpen();
        } finally {
          stopRenewing();
          runningExports.delete(cycleKey);
          ended.abort();
        }
        continue;
      }
      // Another read of the export under a live claim (renewed while it goes on) is waited for as long as
      // it holds the cycle open: timed out, the batch's devices would be sent on as failed.
      if (Date.now() >= (state.state === 'pending' ? Math.max(deadline, cycleCapOf(batch)) : deadline)) {
        const fetchError = {
          code: 'BULK_EXPORT_TIMEOUT',
          message: `the cycle's bulk export was not ready within ${deps.bulkWaitMs} ms`,
        };
        return withoutExport(batch, fetchError, now());
      }
      await heartbeat();
      await sleepUntil(deps.bulkPollMs ?? 200, signal, runningExports.get(cycleKey)?.signal);
      throwIfStopping(signal);
    }
  }

  function bulkCycleOf(batch: DeviceBatch): BulkCycle | undefined {
    if (!readsExportLast(deps.exportLast, batch)) return undefined;
    const current = bulkCycles.get(batch.tenantId);
    if (current?.cycleId === batch.cycleId) return current;
    const startedAt = Date.parse(batch.cycleStartedAt);
    // A batch of the cycle before (its last one, tried again) or of an older one, come again: it waits for
    // no newer cycle, whose batches may be waiting for it.
    if (current?.previous?.cycleId === batch.cycleId) return current.previous;
    if (current && startedAt < current.startedAt)
      return { cycleId: batch.cycleId, startedAt, ready: Promise.resolve(), running: new Set() };
    const settled = [...(current?.running ?? [])].map((work) => work.catch(() => undefined));
    // One cycle back is kept: the one before it has nothing left to wait for.
    if (current) current.previous = undefined;
    const cycle: BulkCycle = {
      cycleId: batch.cycleId,
      startedAt,
      ...(current ? { previous: current } : {}),
      ready: Promise.all(settled),
      running: new Set<Promise<void>>(),
    };
    bulkCycles.set(batch.tenantId, cycle);
    return cycle;
  }

  /**
   * The batch enriched and produced (on any replica), or recorded lost (dead-lettered, never to come again),
   * or its cycle published or gone: a batch dead-lettered after its cycle was closed is never recorded lost.
   */
  async function enrichedOrLost(batch: DeviceBatch): Promise<boolean> {
    const [upTo, before, state] = await Promise.all([
      deps.cycles.enrichedOrLostBatches(batch.tenantId, batch.cycleId, batch.batchIndex + 1),
      deps.cycles.enrichedOrLostBatches(batch.tenantId, batch.cycleId, batch.batchIndex),
      deps.cycles.get(batch.tenantId, batch.cycleId),
    ]);
    return upTo > before || state === null || state.published !== undefined;
  }

  /**
   * Waits for the previous cycle's last batch, if a try of it here failed: once the previous cycle's batches
   * are no longer running, its last batch may still be waiting to be tried again, and until it succeeds the
   * tenant's latest export is the one before (a batch enriched from it now is corrected from it, see
   * `latestOf`, but scored with older vulnerabilities). Until that batch succeeds here, is found enriched
   * (another replica took it over) or recorded lost (dead-lettered: the tenant's cycles go on without it),
   * or its cycle is published or gone, for at most URS_BULK_WAIT_MS from when the cycle's first batch began
   * to wait: then the cycle's batches wait for it no more.
   */
  async function previousLastSettled(
    batch: DeviceBatch,
    cycle: BulkCycle,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    for (;;) {
      const previous = cycle.previous;
      const last = previous?.lastFailed;
      if (previous === undefined || last === undefined) return;
      cycle.previousWaitUntil ??= Date.now() + deps.bulkWaitMs;
      if (await enrichedOrLost(last)) {
        if (previous.lastFailed === last) delete previous.lastFailed;
        return;
      }
      if (Date.now() >= cycle.previousWaitUntil) {
        if (previous.lastFailed === last) {
          delete previous.lastFailed;
          log.warn("the previous bulk cycle's last batch failed and has not succeeded since: going on", {
            tenantId: batch.tenantId,
            cycleId: batch.cycleId,
            previousCycleId: last.cycleId,
            waitedMs: deps.bulkWaitMs,
          });
        }
        return;
      }
      await sleepUntil(deps.bulkPollMs ?? 200, signal);
      throwIfStopping(signal);
    }
  }

  return {
    enrich: bulk,
    cycleOf: bulkCycleOf,
    async afterPrevious(batch, cycle, log, signal) {
      // Held open only once it has waited a while: most cycles' previous one is done long before.
      const stopHolding = keepRenewing(() => holdCycleOpen(batch), renewEveryMs, {
        onError: (error) =>
          log.warn('bulk cycle not held open behind the previous one', {
            tenantId: batch.tenantId,
            cycleId: batch.cycleId,
            reason: errorMessage(error),
          }),
      });
      try {
        await cycle.ready;
        await previousLastSettled(batch, cycle, log, signal);
      } finally {
        stopHolding();
      }
    },
    tried(batch, cycle, error, handledAgain) {
      if (!batch.lastBatch) return;
      // A failure the bus does not try again (dead-lettered at once, or after its last attempt) leaves nothing
      // to wait for.
      const again =
        error !== undefined && (handledAgain ?? (isInfrastructureFault(error) || canRetry(error)));
      if (again) cycle.lastFailed = batch;
      else delete cycle.lastFailed;
    },
    ended(batch) {
      const cycleKey = `${batch.tenantId}/${batch.cycleId}`;
      if (claims.get(cycleKey) === batch.batchIndex) claims.delete(cycleKey);
    },
  };
}
