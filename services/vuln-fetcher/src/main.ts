import { createConsumerRunner } from '@urs/bus';
import { createCallMetrics, createHttpsAgent, createSharedLimiter, quotaGateFor } from '@urs/defender';
import { runService } from '@urs/runtime';
import { checkSecretKey, createReplicaKeyCheck, createSecretSealer } from '@urs/secrets';
import {
  createAnsweredCalls,
  createBulkVulnerabilityCache,
  createCycleStore,
  createKeyFingerprintStore,
  createTenantStore,
  recordLostBatches,
} from '@urs/store';
import { vulnFetcherConfig } from './config';
import { createEnrichHandler } from './handler';
import { createDefenderSources } from './sources';
import { stageTopics } from './topics';

void runService({
  name: 'vuln-fetcher',
  topics: stageTopics,
  settings: vulnFetcherConfig,
  // Kafka away at start: up and answering /readyz 503 (`waiting for Kafka`) until it answers, then consuming,
  // instead of exiting 1 after KafkaJS's retries and restarting in a loop behind the orchestrator's backoff.
  waitForKafka: true,
  async setup({ settings: own, config, logger, metrics, redis, kafka, publisher, stopping, drainTimeoutMs }) {
    const prefix = config.redis.keyPrefix;
    const sealer = createSecretSealer(own.secretKeys);
    const tenants = createTenantStore(redis, prefix);
    const cycles = createCycleStore(redis, prefix);
    // A replica with the wrong key stays out (the start fails naming URS_SECRET_KEY) instead of taking
    // batches whose secrets it cannot open while it reports ready.
    const keyIds = new Set(own.secretKeys.keys.keys());
    // Rolled out first with a new key, they write its fingerprint: the registrar re-seals with it once it matches.
    const fingerprints = createKeyFingerprintStore(redis, prefix);
    await checkSecretKey({ sealer, tenants, keyIds, logger, fingerprints, claimNewKeys: true });
    const limiter = await createSharedLimiter({
      redis,
      keyPrefix: prefix,
      maxConcurrent: own.maxInFlight,
      bulkMaxSlots: own.bulkMaxSlots,
      ...(own.slotHandOffMs > 0 ? { handOff: { maxLeaseMs: own.slotHandOffMs } } : {}),
      metrics,
      logger,
    });
    // The Defender calls' series from the start (held-back at 0 per endpoint), not from the first client made.
    createCallMetrics(metrics);
    const httpsAgent = createHttpsAgent(own.extraCa ? { extraCa: own.extraCa } : {});
    const sources = createDefenderSources({
      sealer,
      limiter,
      quota: quotaGateFor(own.quotas, redis, prefix),
      requestTimeoutMs: own.requestTimeoutMs,
      maxQuotaWaitMs: own.maxQuotaWaitMs,
      maxDegradedWaitMs: own.maxDegradedWaitMs,
      tokenRequestTimeoutMs: own.tokenRequestTimeoutMs,
      bulkPageSize: own.bulkPageSize,
      foldThread: own.bulkFoldThread,
      httpsAgent,
      overrides: own.defender,
      logger,
      metrics,
    });
    // Stopping aborts the calls in flight (the runner, already stopping, then leaves their batch
    // uncommitted); without it a batch pacing itself on its tenant's quota would hold the graceful stop
    // for minutes (the runner would abort it only after its drain time).
    const handler = createEnrichHandler({
      signal: stopping,
      tenants,
      sources,
      // A secret this key does not open: the tenant's bad record when the key opens other tenants' secrets.
      replicaKey: createReplicaKeyCheck({ sealer, secrets: tenants, keyIds, fingerprints }),
      bulkCache: createBulkVulnerabilityCache(redis, prefix, own.bulkCacheTtlMs),
      // On the cycle store's client: an answer kept reaches Redis before the batch's claim is given back.
      answers: createAnsweredCalls(redis, prefix),
      cycles,
      exportLast: own.bulkExportLast,
      skipUnchangedExport: own.bulkSkipUnchanged,
      correctionWaitMs: own.bulkCorrectionWaitMs,
      publisher,
      topic: config.topics.devicesEnriched,
      logger,
      metrics,
      concurrency: own.concurrency,
      bulkWaitMs: own.bulkWaitMs,
      bulkClaimMs: own.bulkClaimMs,
      bulkCycleMaxMs: own.bulkCycleMaxMs,
      tenantWaitMs: own.tenantWaitMs,
    });
    const runner = createConsumerRunner({
      kafka,
      service: 'vuln-fetcher',
      groupId: own.groupId,
      sessionTimeoutMs: own.sessionTimeoutMs,
      subscriptions: [
        {
          topic: config.topics.deviceBatches,
          contract: 'urs/device-batch',
          handler,
          // A device batch dead-lettered (its tenant unknown, say): its cycle, and its corrections, do not wait for it.
          deadLettering: recordLostBatches(cycles),
        },
      ],
      publisher,
      dlqTopic: config.topics.dlq,
      logger,
      metrics,
      partitionsConsumedConcurrently: own.partitionsConcurrency,
      // One tenant's batch waiting minutes on its quota must not hold up another tenant's batch that
      // shares its partition: batches are ordered per tenant (the key), different tenants run at once.
      // Two batches of a tenant overlap, so the call slots its draining batch leaves free serve the next.
      ordering: 'key',
      maxBufferedPerPartition: own.maxBufferedPerPartition,
      drainTimeoutMs,
    });
    return {
      runners: [runner],
      closers: [
        { name: 'defender-clients', close: async () => sources.close() },
        { name: 'limiter', close: () => limiter.close() },
        { name: 'https-agent', close: async () => httpsAgent.destroy() },
      ],
    };
  },
});
