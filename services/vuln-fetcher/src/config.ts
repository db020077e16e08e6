import {
  ConfigError,
  consumerSettings,
  defenderSettings,
  readBool,
  readInt,
  secretKeyConfig,
  type ConsumerSettings,
  type DefenderSettings,
  type Env,
  type SecretKeyConfig,
} from '@urs/config';
import { DEFAULT_MAX_DEGRADED_WAIT_MS, DEFAULT_MAX_QUOTA_WAIT_MS } from './sources';

/**
 * The vuln-fetcher's own settings, how it reaches Defender (`defenderSettings`) and how its group takes
 * in `urs.device-batches` (`consumerSettings`: group `{URS_TOPIC_PREFIX}urs.vuln-fetcher`, 16 partitions
 * at once by default). Batches are ordered per tenant (the message key), not per partition, so the
 * partitions taken in at once no longer decide whether tenants sharing a partition wait for each other;
 * taking a batch in is quick.
 */
export interface VulnFetcherConfig extends DefenderSettings, ConsumerSettings {
  secretKeys: SecretKeyConfig;
  /** Per-device calls of one batch started at once. Env `URS_VULN_CONCURRENCY`, default 10. */
  concurrency: number;
  /**
   * Batches of one partition held in memory and not yet enriched (queued behind their tenant's earlier
   * batches, or in flight), so memory stays bounded: this many batches of up to 500 devices per partition.
   * When reached, the partition's fetching pauses until half of them are done. A partition still full 2 s
   * later (the runner's readPastAfterMs) is read on, so a tenant whose batches all wait (its export, its
   * quota) does not hold up the tenants behind it for longer: a batch that finds no room is let go of (its
   * offset kept, up to 10,000 a partition) and read again once there is room, and a tenant holding at least
   * two batches fewer than the tenant holding the most takes the place of that tenant's newest batch not
   * started. Not at once: a tenant whose batches stream through fills the partition too, and letting its
   * batches go would read most of them twice. A tenant that held the partition when it was last full (all of
   * it but two batches) and keeps refilling it with its own batches is read past 2 s after it filled it all
   * the same, though the partition was half empty meanwhile: the tenants behind a backlog of its batches wait
   * 2 s, not the whole backlog (its batches read past from then on are read twice). Env
   * `URS_MAX_BUFFERED_PER_PARTITION`, default 50.
   */
  maxBufferedPerPartition: number;
  /** How long a batch waits for its cycle's bulk export, ms. Env `URS_BULK_WAIT_MS`, default 600000. */
  bulkWaitMs: number;
  /**
   * How long a batch waits for its tenant's record missing from the rebuilt tenant store (sent on `urs.tenants`,
   * not yet written to Redis by the registrar) before the batch fails for the dead-letter topic, ms. Env
   * `URS_TENANT_RECORD_WAIT_MS`, default 30000. While the store is not rebuilt the batch is held instead.
   */
  tenantWaitMs: number;
  /** How long a bulk export claim holds if its holder dies, ms. Env `URS_BULK_CLAIM_MS`, default 300000. */
  bulkClaimMs: number;
  /**
   * Longest a bulk cycle is held open past its deadline while its export is read (renewing its claim), from
   * the cycle's start, ms; batches waiting for the read wait up to then too. Env `URS_BULK_CYCLE_MAX_MS`,
   * default 7200000 (twice the poller's URS_CYCLE_MAX_MS default).
   */
  bulkCycleMaxMs: number;
  /** How long the bulk summaries of a cycle stay in Redis, ms. Env `URS_BULK_CACHE_TTL_MS`, default 7200000. */
  bulkCacheTtlMs: number;
  /**
   * Rows per page of the bulk export, 1–200,000. Env `URS_BULK_PAGE_SIZE`, default 50000 (Microsoft's
   * default): a bigger page spends fewer calls of the 30/min quota but holds more JSON in memory at once.
   */
  bulkPageSize: number;
  /**
   * Scan and fold a bulk export on a thread of its own while the main thread reads it off the socket (two
   * cores for the cycle's longest step instead of one; ~20 MB more at 100,000 devices). Env
   * `URS_BULK_FOLD_THREAD`, default true.
   */
  bulkFoldThread: boolean;
  /**
   * Enrich a bulk cycle's batches from the tenant's latest export at once and read the cycle's own export
   * last, then correct the devices it changed. Env `URS_BULK_EXPORT_LAST`, default true.
   */
  bulkExportLast: boolean;
  /**
   * A bulk cycle first asks which snapshot Microsoft serves (`SoftwareVulnerabilitiesExport`'s
   * `generatedTime`, 5 calls/min and 20/h; asked in any case: a device first seen after it, or less than a day
   * before, may not be in the export), and, when it reads its export last, reads nothing when it is the snapshot of the tenant's latest
   * export and that was read at most 6 hours ago: Microsoft regenerates it every 6 hours, so most cycles would read the same ~250 MB (100,000
   * devices) again. Env `URS_BULK_SKIP_UNCHANGED`, default true.
   */
  bulkSkipUnchanged: boolean;
  /**
   * How long a bulk cycle's corrections wait for the cycle's earlier batches to be enriched (on any replica)
   * or recorded lost, in ms; then the last batch fails and the bus tries it again, and at its 5th try they go
   * anyway. A correction that overtakes its device's batch finds no score of the cycle to correct, so that
   * device keeps the older export's vulnerabilities until the next cycle. Env `URS_BULK_CORRECTION_WAIT_MS`,
   * default 30000, at most 600000; 0 does not wait (nor fail the batch).
   */
  bulkCorrectionWaitMs: number;
  /**
   * How long a call slot passes straight from one per-device call of this process to the next before it goes
   * back to the shared limiter, in ms; 0 asks Redis for a slot for every call. Env
   * `URS_DEFENDER_SLOT_HANDOFF_MS`, default 1000, at most 20000 (plus the 30 s request timeout it stays below the
   * limiter's 60 s job expiration). While no other process waits for a slot, a lease goes on, up to 20 s in all.
   * The Redis round trips between calls otherwise leave slots idle; the price is that after a loss of the
   * limiter's keys, a slot taken before it serves calls up to this long beside the new ones (a lease is not kept
   * once the shared count no longer holds this process's slots).
   */
  slotHandOffMs: number;
  /**
   * At most this many of the shared call slots (`URS_DEFENDER_MAX_IN_FLIGHT`) held by bulk export pages at once,
   * across every vuln-fetcher: a page holds its slot until it ends (up to a minute), so without a cap a few
   * tenants read in bulk at once would hold every slot and keep the per-device calls of other tenants waiting.
   * Env `URS_BULK_MAX_SLOTS`, from 1 to `URS_DEFENDER_MAX_IN_FLIGHT`, default half of it rounded up (5 of 10);
   * every vuln-fetcher must be given the same (the last one to start writes it to the shared cap).
   */
  bulkMaxSlots: number;
  /**
   * Longest a Defender call waits for its tenant's quota (a window's room, or the block of a 429's
   * Retry-After, shared by every process), and in all for its own 429s, in ms: a longer wait fails the call
   * THROTTLED at once, counted towards the tenant's outage (its batch's other calls end as quickly, its
   * status is written), instead of waiting up to an hour past the cycle's deadline. Env
   * `URS_VULN_MAX_QUOTA_WAIT_MS`, default 180000, at most 3600000.
   */
  maxQuotaWaitMs: number;
  /**
   * Longest a Defender call of a degraded tenant (its last call failed slowly) waits, in all, for one of the
   * install's 2 places of degraded tenants' calls, in ms: a longer wait fails the call THROTTLED at once, as a
   * wait for the quota does (counted towards the tenant's outage, its status written), instead of its batch
   * waiting behind every other degraded tenant's calls until the cycle's deadline. Not the wait for a shared slot
   * or for the bulk cap with the place held. Env `URS_VULN_MAX_DEGRADED_WAIT_MS`, default 60000, at most 3600000.
   */
  maxDegradedWaitMs: number;
}

/** `URS_BULK_MAX_SLOTS`: 1 to the shared slots, default half of them rounded up. */
function readBulkMaxSlots(env: Env, maxInFlight: number): number {
  const value = readInt(env, 'URS_BULK_MAX_SLOTS', { fallback: Math.ceil(maxInFlight / 2), min: 1 });
  if (value > maxInFlight) {
    throw new ConfigError(
      'URS_BULK_MAX_SLOTS',
      `must be ≤ URS_DEFENDER_MAX_IN_FLIGHT (${maxInFlight}): bulk export pages can hold no more than the shared call slots (got ${value})`,
    );
  }
  return value;
}

export function vulnFetcherConfig(env: Env): VulnFetcherConfig {
  const defender = defenderSettings(env);
  return {
    ...consumerSettings(env, 'vuln-fetcher', 16),
    secretKeys: secretKeyConfig(env),
    ...defender,
    bulkMaxSlots: readBulkMaxSlots(env, defender.maxInFlight),
    concurrency: readInt(env, 'URS_VULN_CONCURRENCY', { fallback: 10, min: 1, max: 100 }),
    maxBufferedPerPartition: readInt(env, 'URS_MAX_BUFFERED_PER_PARTITION', {
      fallback: 50,
      min: 1,
      max: 10_000,
    }),
    bulkWaitMs: readInt(env, 'URS_BULK_WAIT_MS', { fallback: 600_000, min: 1_000 }),
    bulkClaimMs: readInt(env, 'URS_BULK_CLAIM_MS', { fallback: 300_000, min: 1_000 }),
    bulkCycleMaxMs: readInt(env, 'URS_BULK_CYCLE_MAX_MS', { fallback: 7_200_000, min: 1_000 }),
    tenantWaitMs: readInt(env, 'URS_TENANT_RECORD_WAIT_MS', { fallback: 30_000, min: 0, max: 600_000 }),
    bulkCacheTtlMs: readInt(env, 'URS_BULK_CACHE_TTL_MS', { fallback: 7_200_000, min: 60_000 }),
    bulkPageSize: readInt(env, 'URS_BULK_PAGE_SIZE', { fallback: 50_000, min: 1, max: 200_000 }),
    bulkFoldThread: readBool(env, 'URS_BULK_FOLD_THREAD', true),
    bulkExportLast: readBool(env, 'URS_BULK_EXPORT_LAST', true),
    bulkSkipUnchanged: readBool(env, 'URS_BULK_SKIP_UNCHANGED', true),
    bulkCorrectionWaitMs: readInt(env, 'URS_BULK_CORRECTION_WAIT_MS', {
      fallback: 30_000,
      min: 0,
      max: 600_000,
    }),
    slotHandOffMs: readInt(env, 'URS_DEFENDER_SLOT_HANDOFF_MS', { fallback: 1_000, min: 0, max: 20_000 }),
    maxQuotaWaitMs: readInt(env, 'URS_VULN_MAX_QUOTA_WAIT_MS', {
      fallback: DEFAULT_MAX_QUOTA_WAIT_MS,
      min: 0,
      max: 3_600_000,
    }),
    maxDegradedWaitMs: readInt(env, 'URS_VULN_MAX_DEGRADED_WAIT_MS', {
      fallback: DEFAULT_MAX_DEGRADED_WAIT_MS,
      min: 0,
      max: 3_600_000,
    }),
  };
}
